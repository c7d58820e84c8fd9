"""Compression: pruning (unstructured L1, structured channels), recovery (fine-tune, distillation), quantization."""
