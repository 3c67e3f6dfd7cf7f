"""Data in: the contract, validation, the measurement store, the simulator and feature building."""
