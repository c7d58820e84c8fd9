"""Train every zoo model on sample_data's train split, deterministically, and write the weights (safetensors)
with the val accuracy each reached to sample_data/weights/.

The fusion model is also trained as an image-only and a text-only ablation, to show the task needs both.
Usage: python dev/train_zoo.py [--only NAME ...] [--epochs-scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import save_file

from edgekit.compress.finetune import cross_entropy, train
from edgekit.data.batches import train_batches
from edgekit.reference import torch_accuracy
from edgekit.zoo import ZOO, weights_path
from edgekit.zoo.fusion import FusionNet

SEED = 0
RECIPES = {  # epochs, learning rate, weight decay
    "cnn": (20, 2e-3, 1e-4),
    "attention": (20, 2e-3, 1e-4),
    "transformer": (100, 2e-3, 0.05),  # a ViT on 3800 digits needs the long schedule and real weight decay
    "fusion": (30, 2e-3, 1e-4),
}


def fit(name: str, model: torch.nn.Module, scale: float) -> tuple[float, float]:
    torch.manual_seed(SEED)
    epochs, lr, weight_decay = RECIPES[name]
    epochs = max(1, round(epochs * scale))
    task = "mnist-fusion" if name == "fusion" else "mnist"
    start = time.perf_counter()
    train(model, train_batches(task, seed=SEED), epochs, lr, cross_entropy, weight_decay)
    seconds = time.perf_counter() - start
    return torch_accuracy(model, task), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(ZOO), default=list(ZOO))
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="scale every recipe's epochs (quick tries)")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    record_path = weights_path("cnn").parent / "accuracy.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        torch.manual_seed(SEED)
        model = ZOO[name].build()
        acc, seconds = fit(name, model, args.epochs_scale)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path(name)))
        record[name] = {"val_accuracy": round(acc, 4), "epochs": max(1, round(RECIPES[name][0] * args.epochs_scale)),
                        "train_seconds": round(seconds, 1)}
        print(f"{name}: val accuracy {acc:.4f} ({seconds:.0f} s)", flush=True)
        if name == "fusion":
            for ablation, kwargs in (("image_only", {"use_text": False}), ("text_only", {"use_image": False})):
                torch.manual_seed(SEED)
                acc_ablation, _ = fit(name, FusionNet(**kwargs), args.epochs_scale)
                record[name][f"{ablation}_val_accuracy"] = round(acc_ablation, 4)
                print(f"fusion {ablation}: val accuracy {acc_ablation:.4f}", flush=True)
        record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
