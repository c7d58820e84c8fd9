"""Post-training quantization, end to end: one entry point, :func:`quantize_target`, takes a model and a target
profile to a quantized artifact. Weight rounding (``gptq``, then ``distill``) and the mixed-precision search
(``mixed``) are its strategies; each backend's ``quantize`` does only what is specific to its runtime. The
manifest's quantization record is assembled here, once."""
from edgekit.quantize.target import quantize_target

__all__ = ["quantize_target"]
