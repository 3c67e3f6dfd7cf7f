"""bip serving."""
