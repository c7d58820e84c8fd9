"""Where static int8's error comes from, in torch, before any runtime: the logits of the model with GPTQ int8
weights and 8-bit activations simulated as a static int8 graph rounds them (edgekit.quantize.distill's
simulation, which gives the runtimes' own error within 0.1 dB on EfficientNet-Lite0 and MobileNetV2) against the
float model's, on the validation data, with the activation ranges chosen four ways:

- calibration: min / max on the calibration data, one range per tensor (what the runtimes do);
- validation ranges: min / max on the validation data itself. If this is much better, the calibration data
  misses the validation data's range (clipping), and more or other calibration data is the fix;
- per channel where signed: one range per channel on every tensor that holds negative values (the residual
  stream, the linear bottlenecks; not the post-ReLU tensors, whose ranges a ReLU6 fixes). This is the most that
  equalizing channel ranges (cross-layer equalization) could give a per-tensor runtime;
- none: weights only, activations float;
- calibration, float weights: the first, with the float model's own weights: what 8-bit activations alone cost.
  Rounding the weights (GPTQ) only adds to it; weights trained against the rounding (distillation) can win some
  of it back, no more than it shows is lost.

If none of them comes near the gate, the error is rounding spread over the whole network, and only layers kept
in float (mixed precision) or trained weights (weight_rounding = "distill") change it.

Prints one model's column of the table "Which part of int8 costs what" in docs/results/int8/cnn-error.md, as a
markdown table (it does not write the page: the numbers are pasted in).

    python benchmarks/int8_headroom.py --source examples/efficientnet_lite0.py:build \\
        --calib examples/efficientnet_lite0.py:calibration --data examples/efficientnet_lite0.py:validation
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize

from edgekit.quantize.distill import _batches, _Simulation
from edgekit.quantize.gptq import cached_gptq
from edgekit.source import flatten_outputs
from edgekit.validate.metrics import output_stats

# gptq_effect.py, beside this file, loads the inputs alike
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gptq_effect import model_and_data


class _ChannelRanges(_Simulation):
    """The simulation with one range per channel (axis 1) kept for every tensor, used per channel for the keys in
    ``per_channel`` and merged to one range elsewhere."""

    per_channel: frozenset[str] = frozenset()

    def _round(self, key: str, x: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return None
        axes = [d for d in range(x.ndim) if d != 1] if x.ndim > 1 else [0]
        if self.observing:
            low, high = x.amin(dim=axes), x.amax(dim=axes)
            if key in self.ranges:
                low, high = torch.minimum(low, self.ranges[key][0]), torch.maximum(high, self.ranges[key][1])
            self.ranges[key] = (low, high)
            return None
        if key not in self.ranges:
            return None
        low, high = self.ranges[key]
        if key in self.per_channel and x.ndim > 1:
            shape = [1] * x.ndim
            shape[1] = -1
            low, high = low.view(shape), high.view(shape)
        else:
            low, high = low.min(), high.max()
        return _fake_uint8_tensor(x, low, high)


def _fake_uint8_tensor(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """distill._fake_uint8 with tensor ranges (a range per channel broadcasts)."""
    low, high = torch.clamp(low, max=0.0), torch.clamp(high, min=0.0)
    scale = ((high - low) / 255).clamp(min=1e-12)
    zero = torch.round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def _logits(module: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([flatten_outputs(module(*b))[0][1].numpy() for b in batches])


def main() -> None:
    args, spec, calib, data = model_and_data(__doc__.splitlines()[0])
    names = spec.input_names or tuple(calib.inputs)
    calib_batches, data_batches = _batches(calib, names, 16), _batches(data, names, 16)
    reference = _logits(spec.module.eval(), data_batches)
    rounded, _ = cached_gptq(spec, calib, per_channel=True)
    module = copy.deepcopy(rounded.module).eval()
    sim = _ChannelRanges(module, lambda _name: False, True, calib_batches[0])
    sim.observe(calib_batches)
    signed = frozenset(k for k, (low, _) in sim.ranges.items() if float(low.min()) < 0)
    rows = []
    for label, observed, per_channel in (("calibration", calib_batches, frozenset()),
                                         ("validation ranges", data_batches, frozenset()),
                                         ("per channel where signed", calib_batches, signed)):
        sim.observe(observed)
        sim.per_channel = per_channel
        rows.append((label, output_stats("logits", reference, _logits(module, data_batches))))
    sim.observe(calib_batches)
    sim.finish()  # the hooks go; the weights stay on their int8 grid
    rows.append(("none (weights only)", output_stats("logits", reference, _logits(module, data_batches))))
    floating = copy.deepcopy(spec.module).eval()
    activations = _ChannelRanges(floating, lambda _name: False, True, calib_batches[0])
    for layer in activations.layers.values():  # the float weights back: activations alone are rounded
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    activations.observe(calib_batches)
    rows.append(("calibration, float weights (activations only)",
                 output_stats("logits", reference, _logits(floating, data_batches))))
    print(f"{args.source}: GPTQ int8 weights (but the last row), simulated 8-bit activations, "
          f"{len(reference)} validation samples; "
          f"{len(sim.ranges)} rounded tensors, {len(signed)} signed")
    print("| activation ranges | logits cosine (SQNR) | top-1 agreement | flips |")
    print("|---|---|---|---|")
    for label, s in rows:
        print(f"| {label} | {s.cosine:.5f} ({s.sqnr_db:.1f} dB) | {s.top1_agreement:.3f} | {s.flips() or '-'} |")


if __name__ == "__main__":
    main()
