"""bip experiments."""
