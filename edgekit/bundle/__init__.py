"""Bundles: what goes onto the device (model, manifest, golden data, a runner without torch, a C array)."""
