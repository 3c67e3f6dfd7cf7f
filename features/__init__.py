"""Data in: the contract, validation, the measurement store and feature building."""
