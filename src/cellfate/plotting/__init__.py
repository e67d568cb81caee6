"""Figures, one module per figure family; every function writes one PNG atomically."""
