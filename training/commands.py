"""The `bip` commands of the training stage."""

COMMANDS: list = []
