"""Trim-threshold × λ sweeps: cheap grid points, validation-based selection, plot, resume, executors."""
