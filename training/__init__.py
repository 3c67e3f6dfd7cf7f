"""bip training."""
