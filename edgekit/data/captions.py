"""Captions of the fusion task and their word-level tokenizer (English words, Chinese characters)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.data.mnist import sample_data_root

SEQ_LEN = 8
PAD, UNK = 0, 1


@dataclass(frozen=True)
class Caption:
    id: int
    lang: str
    text: str
    number: int


def split_words(text: str) -> list[str]:
    """Whitespace words; each CJK character is a word of its own (Chinese has no spaces)."""
    words: list[str] = []
    for chunk in text.lower().split():
        buf = ""
        for ch in chunk:
            if "\u4e00" <= ch <= "\u9fff":
                if buf:
                    words.append(buf)
                    buf = ""
                words.append(ch)
            else:
                buf += ch
        if buf:
            words.append(buf)
    return words


@lru_cache(maxsize=4)
def read_captions(root: Path | None = None) -> tuple[Caption, ...]:
    with open((root or sample_data_root()) / "captions" / "captions.csv", newline="", encoding="utf-8") as f:
        return tuple(Caption(int(r["id"]), r["lang"], r["text"], int(r["number"])) for r in csv.DictReader(f))


@lru_cache(maxsize=4)
def vocabulary(root: Path | None = None) -> dict[str, int]:
    words = sorted({w for c in read_captions(root) for w in split_words(c.text)})
    return {"<pad>": PAD, "<unk>": UNK, **{w: i + 2 for i, w in enumerate(words)}}


def tokenize(text: str, root: Path | None = None) -> np.ndarray:
    """int64 [SEQ_LEN] token ids, padded with PAD, truncated to SEQ_LEN."""
    vocab = vocabulary(root)
    ids = [vocab.get(w, UNK) for w in split_words(text)][:SEQ_LEN]
    return np.array(ids + [PAD] * (SEQ_LEN - len(ids)), dtype=np.int64)


def read_pairs(split: str, root: Path | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image files, tokens int64 [N, SEQ_LEN], targets int64 [N]) of a fixed image+caption split."""
    captions = read_captions(root)
    with open((root or sample_data_root()) / "captions" / f"{split}_pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tokens = np.stack([tokenize(captions[int(r["caption_id"])].text, root) for r in rows])
    return [r["file"] for r in rows], tokens, np.array([int(r["target"]) for r in rows], dtype=np.int64)


def decode_tokens(ids: np.ndarray, root: Path | None = None) -> list[str]:
    """Token ids back to words, for plot labels."""
    words = {i: w for w, i in vocabulary(root).items()}
    return [words.get(int(i), "<unk>") for i in ids]
