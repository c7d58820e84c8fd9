"""sample_data/ is real, complete and split without leaks."""
import numpy as np
import pytest

from edgekit.data.captions import read_captions, read_pairs, tokenize
from edgekit.data.mnist import read_split, sample_data_root
from edgekit.data.tasks import load_task
from edgekit.errors import EdgekitError

SPLITS = {"train": 3800, "val": 1000, "calib": 200}


def test_splits_are_disjoint_and_balanced():
    splits = {name: read_split(name) for name in ("train", "val", "calib")}
    files = [set(s.files) for s in splits.values()]
    assert sum(len(f) for f in files) == 5000 and len(set.union(*files)) == 5000
    for split in splits.values():
        counts = np.bincount(split.labels, minlength=10)
        assert counts.min() == counts.max()
        assert split.images.shape[1:] == (28, 28) and split.images.max() > 200  # real ink, not blank


@pytest.mark.parametrize("split, n", SPLITS.items())
def test_each_split_is_one_npz_of_plain_arrays(split, n):
    path = sample_data_root() / "mnist" / f"{split}.npz"
    with np.load(path, allow_pickle=False) as z:  # no pickles: ids are a unicode array, not objects
        assert sorted(z.files) == ["files", "images", "labels"]
        images, labels, files = z["images"], z["labels"], z["files"]
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (n,) and set(labels.tolist()) == set(range(10))
    assert files.dtype.kind == "U" and files.shape == (n,) and len(set(files.tolist())) == n
    assert all(f.startswith(f"{split}/") and f.endswith(".png") for f in files.tolist())  # ids as captions use them
    digits = read_split(split)  # the reader gives exactly the stored arrays, in their order
    assert np.array_equal(digits.images, images) and np.array_equal(digits.labels, labels)
    assert digits.files == tuple(files.tolist())


def test_no_id_is_shared_between_splits_and_every_caption_pair_names_a_digit():
    ids = {name: set(read_split(name).files) for name in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["calib"] and not ids["val"] & ids["calib"]
    for split in ("val", "calib"):
        files, _, _ = read_pairs(split)
        assert set(files) <= ids[split]


def test_sample_data_holds_no_image_files():
    root = sample_data_root()
    assert not [p for p in root.rglob("*") if p.suffix.lower() == ".png"]
    assert not [p for p in (root / "mnist").iterdir() if p.is_dir() or p.suffix == ".csv"]


def test_a_missing_split_is_a_one_line_error(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(EdgekitError) as exc:
        read_split("val", tmp_path)
    assert str(tmp_path / "mnist" / "val.npz") in str(exc.value) and "\n" not in str(exc.value)


def test_captions_in_two_languages_and_fusion_targets():
    captions = read_captions()
    assert {c.lang for c in captions} == {"en", "zh"}
    assert {c.number for c in captions} == set(range(10))
    assert (tokenize("加九") > 1).sum() == 2  # every Chinese character is a known token
    val = load_task("mnist-fusion", "val")
    assert val.inputs["image"].shape == (1000, 1, 28, 28) and val.inputs["tokens"].shape == (1000, 8)
    digits = read_split("val")
    assert not np.array_equal(val.labels, digits.labels)  # the target is not the digit alone
