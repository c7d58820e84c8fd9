"""Text data without code: .txt (one sentence a line), .jsonl and .csv (a text field, optional label by name or
number, optional second text of a pair), tokenized by the model's own tokenizer at the model's length; a wrong
encoding, an empty file or a model without a tokenizer is one line."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="pip install 'edgekit[hf]'")

from edgekit.cli import main  # noqa: E402
from edgekit.data.sources import InputInfo, load_data  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.sources.hf import Tokenize  # noqa: E402
from tests.hf_models import REVIEWS, save_bert_classifier, write_vocab  # noqa: E402

NAMES = ("input_ids", "attention_mask", "token_type_ids")
LENGTH = 16


@pytest.fixture(scope="module")
def info(tmp_path_factory) -> InputInfo:
    """What a sentence classifier with a WordPiece tokenizer and labels negative/positive asks of its data."""
    from transformers import BertTokenizerFast

    vocab = write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    tokenize = Tokenize(BertTokenizerFast(vocab=str(vocab)), NAMES, LENGTH)
    return InputInfo(NAMES, ((2, LENGTH),) * 3, ("int64",) * 3, labels=("negative", "positive"), tokenize=tokenize)


def _load(path: Path, info: InputInfo, samples: int = 100):
    return load_data(str(path), info, "--data", samples)


def test_a_text_file_gives_one_sample_a_line(info, tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\ufeff" + "\n\n".join(text for text, _ in REVIEWS[:5]) + "\n  \n", encoding="utf-8")
    data = _load(path, info)
    assert len(data) == 5 and data.labels is None and data.origin == f"5 sentences from {path}"
    assert {k: v.shape for k, v in data.inputs.items()} == {n: (5, LENGTH) for n in NAMES}
    assert all(v.dtype == np.int64 for v in data.inputs.values())
    assert (data.inputs["input_ids"] == info.tokenize([t for t, _ in REVIEWS[:5]])["input_ids"]).all()
    assert len(_load(path, info, samples=3)) == 3  # a seeded draw, as for any data


def test_jsonl_with_labels_by_name_and_number_and_pairs(info, tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"text": "The film is a delight.", "text_pair": "I laughed out loud.", "label": "positive"},
            {"text": "Nothing happens.", "text_pair": "I walked out before the end.", "label": 0}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    data = _load(path, info)
    assert data.labels.tolist() == [1, 0] and data.origin == f"2 sentence pairs from {path}"
    assert data.inputs["token_type_ids"][0].max() == 1  # the second sentence is segment 1


@pytest.mark.parametrize("header", [("text", "text_pair", "label"), ("sentence1", "sentence2", "label")])
def test_csv_with_pairs_and_labels(info, tmp_path, header):
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, ("A warm, funny story.", "Smart and tender.", "positive"),
                                 ("Loud, long and forgettable.", "A mess, with no heart.", "0")])
    data = _load(path, info)
    assert data.labels.tolist() == [1, 0] and len(data) == 2
    assert data.inputs["token_type_ids"][1].max() == 1


def test_csv_of_sentences_with_labels(info, tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("label", "text"), *((label, text) for text, label in REVIEWS)])
    data = _load(path, info)
    assert len(data) == len(REVIEWS) and data.origin == f"{len(REVIEWS)} sentences from {path}"
    assert data.labels.tolist() == [1 if label == "positive" else 0 for _, label in REVIEWS]
    assert data.inputs["token_type_ids"].max() == 0


@pytest.mark.parametrize("name, content, message", [
    ("latin1.txt", "Un caf\u00e9 cr\u00e8me.\n".encode("latin-1"), "not UTF-8 text (byte 6 is 0xe9); save it as UTF-8"),
    ("empty.txt", b"", "the file is empty"),
    ("blank.csv", b"  \n\n", "the file is empty"),
    ("header.csv", b"text,label\n", "a header and no rows"),
    ("columns.csv", b"review,label\ngood,1\n", "no text field (text or sentence1); it has review, label"),
    ("label.csv", b"text,label\nGood.,positive\nBad.,awful\n", "label 'awful' is not a class of the model"),
    ("number.csv", b"text,label\nGood.,7\n", "label '7' is not a class of the model"),
    ("missing.csv", b"text,label\nGood.,positive\nBad.,\n", "row 3: no label"),
    ("broken.jsonl", b'{"text": "Good."}\n{"text": \n', "line 2: not JSON"),
    ("list.jsonl", b'["Good."]\n', 'line 1: a JSON object with "text" is expected'),
    ("number.jsonl", b'{"text": 3}\n', "line 1: 'text' is not a non-empty string"),
])
def test_bad_text_files_are_one_line_errors(info, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EdgekitError) as caught:
        _load(path, info)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_bert_classifier(tmp_path_factory.mktemp("bert") / "bert")


@pytest.mark.parametrize("source, content, message", [
    ("zoo:cnn", b"A sentence.\n", "a text file needs the model's tokenizer, and this model has none"),
    ("BERT", b"\n \n", "the file is empty"),
])
def test_text_data_errors_exit_2_with_one_line(capsys, tmp_path, bert, source, content, message):
    path = tmp_path / "sentences.txt"
    path.write_bytes(content)
    source = f"hf:{bert}" if source == "BERT" else source
    code = main(["export", source, "--data", str(path), "--target", "onnx-cpu-fp32", "--out",
                 str(tmp_path / "run")])
    # edgekit's progress lines, and transformers' progress bar: on a terminal it goes to the log with everything
    # third-party code prints (fd 2 is redirected; pytest's captured stderr is no fd 2), as the next test shows
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.strip() and not line.lstrip().startswith("..") and "Loading weights" not in line]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_text_file_in_another_encoding_is_one_line_on_the_terminal(tmp_path, bert):
    import subprocess
    import sys

    path = tmp_path / "sentences.txt"
    path.write_bytes("A sentence.\n".encode("utf-16"))
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", f"hf:{bert}", "--data", str(path),
                           "--target", "onnx-cpu-fp32", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    err = [line for line in done.stderr.strip().splitlines() if not line.lstrip().startswith("..")]
    assert done.returncode == 2 and err == [f"edgekit: error: --data {path}: not UTF-8 text (byte 0 is 0xff); "
                                            "save it as UTF-8"], done.stderr
    assert not (tmp_path / "run").exists()
