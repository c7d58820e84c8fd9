"""Train every zoo model on sample_data's train split, deterministically, and write the weights (safetensors)
with the val accuracy each reached to sample_data/weights/.

The fusion model is also trained as an image-only and a text-only ablation, to show the task needs both.
Usage: python tools/train_zoo.py [--only NAME ...] [--epochs-scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from edgekit.data.captions import read_captions, tokenize
from edgekit.data.mnist import read_split
from edgekit.data.tasks import load_task
from edgekit.zoo import ZOO, weights_path
from edgekit.zoo.fusion import FusionNet

SEED = 0
RECIPES = {  # epochs, learning rate
    "cnn": (20, 2e-3),
    "attention": (20, 2e-3),
    "transformer": (40, 2e-3),
    "fusion": (30, 2e-3),
}


def shift(images: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (pad and crop), the usual MNIST augmentation."""
    padded = F.pad(images[:, 0], [max_shift] * 4, value=float(images.min()))
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=gen)
    grid = torch.arange(28)
    rows = (offsets[:, :1] + grid)[:, :, None]
    cols = (offsets[:, 1:] + grid)[:, None, :]
    return padded[torch.arange(images.shape[0])[:, None, None], rows, cols].unsqueeze(1)


def logits_of(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def accuracy(model: torch.nn.Module, inputs: dict[str, np.ndarray], labels: np.ndarray) -> float:
    model.eval()
    tensors = [torch.from_numpy(v) for v in inputs.values()]
    preds = torch.cat([logits_of(model(*[t[i:i + 500] for t in tensors])).argmax(1)
                       for i in range(0, len(labels), 500)])
    return float((preds.numpy() == labels).mean())


def train(model: torch.nn.Module, epochs: int, lr: float, batches) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * len(batches(0))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        model.train()
        for inputs, target in batches(epoch):
            loss = F.cross_entropy(logits_of(model(*inputs)), target, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def digit_batches(batch_size: int = 64):
    train_split = read_split("train")
    images = torch.from_numpy(train_split.normalized())
    labels = torch.from_numpy(train_split.labels)

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(SEED * 1000 + epoch)
        order = torch.randperm(len(labels), generator=gen)
        return [((shift(images[idx], gen),), labels[idx]) for idx in order.split(batch_size)]
    return batches


def fusion_batches(batch_size: int = 64, pairings: int = 3):
    """Each epoch pairs every train image with ``pairings`` fresh random captions."""
    train_split = read_split("train")
    images = torch.from_numpy(train_split.normalized())
    labels = torch.from_numpy(train_split.labels)
    captions = read_captions()
    tokens = torch.from_numpy(np.stack([tokenize(c.text) for c in captions]))
    numbers = torch.tensor([c.number for c in captions])

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(SEED * 1000 + epoch)
        image_idx = torch.randperm(len(labels), generator=gen).repeat(pairings)
        caption_idx = torch.randint(0, len(captions), (len(image_idx),), generator=gen)
        out = []
        for sel in torch.arange(len(image_idx)).split(batch_size):
            i, c = image_idx[sel], caption_idx[sel]
            out.append(((shift(images[i], gen), tokens[c]), (labels[i] + numbers[c]) % 10))
        return out
    return batches


def fit(name: str, model: torch.nn.Module, scale: float) -> tuple[float, float]:
    torch.manual_seed(SEED)
    epochs, lr = RECIPES[name]
    epochs = max(1, round(epochs * scale))
    task = "mnist-fusion" if name == "fusion" else "mnist"
    start = time.perf_counter()
    train(model, epochs, lr, fusion_batches() if task == "mnist-fusion" else digit_batches())
    seconds = time.perf_counter() - start
    val = load_task(task, "val")
    return accuracy(model, val.inputs, val.labels), seconds


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
