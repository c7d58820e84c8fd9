"""Text data without code: ``sentences.txt`` (one a line), ``.jsonl`` (objects with ``text``, optional
``text_pair`` and ``label``) and ``.csv`` (a ``text`` column, optional ``text_pair`` and ``label`` columns; or
``sentence1``/``sentence2`` as GLUE writes them), tokenized by the model's own tokenizer at the model's length.
A label is a class number or one of the model's label names."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")
# the text field -> the field holding the second text of a pair
PAIR_FIELDS = {"text": "text_pair", "sentence1": "sentence2"}


@dataclass(frozen=True)
class TextRows:
    texts: list[str]
    pairs: list[str] | None  # the second texts of sentence pairs
    labels: list[str] | None  # as written: a class number or a label name


def _decode(path: Path, role: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgekitError(f"{role} {path}: cannot read it ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgekitError(f"{role} {path}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
                           "save it as UTF-8") from None
    if not text.strip():
        raise EdgekitError(f"{role} {path}: the file is empty")
    return text


def _lines(text: str, path: Path, role: str) -> TextRows:
    return TextRows([line.strip() for line in text.splitlines() if line.strip()], None, None)


def _records(rows: list[tuple[int, dict]], where: str, unit: str) -> TextRows:
    """Rows of named fields (JSON objects, CSV rows, numbered by ``unit``) -> texts, pairs, labels."""
    first = rows[0][1]
    field_ = next((f for f in PAIR_FIELDS if f in first), None)
    if field_ is None:
        raise EdgekitError(f"{where}: no text field ({' or '.join(PAIR_FIELDS)}); it has {', '.join(first) or 'none'}")
    pair, texts, pairs, labels = PAIR_FIELDS[field_], [], [], []
    for number, row in rows:
        value = row.get(field_)
        if not isinstance(value, str) or not value.strip():
            raise EdgekitError(f"{where} {unit} {number}: {field_!r} is not a non-empty string")
        texts.append(value)
        if pair in first:
            if not isinstance(row.get(pair), str):
                raise EdgekitError(f"{where} {unit} {number}: {pair!r} is not a string")
            pairs.append(row[pair])
        if "label" in first:
            if row.get("label") in (None, ""):
                raise EdgekitError(f"{where} {unit} {number}: no label (the first {unit} has one: all need one)")
            labels.append(str(row["label"]))
    return TextRows(texts, pairs if pair in first else None, labels if "label" in first else None)


def _jsonl(text: str, path: Path, role: str) -> TextRows:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EdgekitError(f"{role} {path} line {number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise EdgekitError(f"{role} {path} line {number}: a JSON object with \"text\" is expected")
        rows.append((number, row))
    return _records(rows, f"{role} {path}", "line")


def _csv(text: str, path: Path, role: str) -> TextRows:
    try:
        rows = [(number, row) for number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), 2)]
    except csv.Error as exc:
        raise EdgekitError(f"{role} {path}: not valid CSV ({exc})") from None
    if not rows:
        raise EdgekitError(f"{role} {path}: a header and no rows")
    return _records(rows, f"{role} {path}", "row")


READERS: dict[str, Callable[[str, Path, str], TextRows]] = {".txt": _lines, ".jsonl": _jsonl, ".csv": _csv}


def read_text(path: Path, role: str) -> TextRows:
    """The samples of a text data file, or a one-line error naming the file (and the line or byte)."""
    if not path.is_file():
        raise EdgekitError(f"{role} {path} does not exist")
    rows = READERS[path.suffix.lower()](_decode(path, role), path, role)
    if not rows.texts:
        raise EdgekitError(f"{role} {path}: the file holds no text")
    return rows


def label_indices(labels: list[str], names: tuple[str, ...], where: str) -> np.ndarray:
    """Class numbers, or the model's label names mapped to their numbers."""
    index = {name: i for i, name in enumerate(names)}
    out = []
    for label in labels:
        if label in index:
            out.append(index[label])
        elif label.isdigit() and (not names or 0 <= int(label) < len(names)):
            out.append(int(label))
        else:
            known = f"the model's labels are {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names \
                else "the model has no label names: give class numbers"
            raise EdgekitError(f"{where}: label {label!r} is not a class of the model ({known})")
    return np.array(out, np.int64)
