"""The `bip` commands of the serving stage."""

COMMANDS: list = []
