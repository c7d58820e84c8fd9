"""Sweeps of sources x recipes x targets: planned with content-addressed keys, run locally or on Ray."""
