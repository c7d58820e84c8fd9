"""Benchmarking: honest timing of an artifact on its runtime."""
