"""Compression before export, as a recipe applied to a ModelSpec: pruning (unstructured L1, structured
channels) and recovery after it (fine-tune, distillation from the original). Quantization is edgekit.quantize's."""
