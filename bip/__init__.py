"""bip bip."""
