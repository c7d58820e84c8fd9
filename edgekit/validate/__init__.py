"""Validation of an artifact against the original torch model, on the same real inputs."""
