"""sample_data/ is real, complete and split without leaks."""
import numpy as np

from edgekit.data.captions import read_captions, tokenize
from edgekit.data.mnist import read_split
from edgekit.data.tasks import load_task


def test_splits_are_disjoint_and_balanced():
    splits = {name: read_split(name) for name in ("train", "val", "calib")}
    files = [set(s.files) for s in splits.values()]
    assert sum(len(f) for f in files) == 5000 and len(set.union(*files)) == 5000
    for split in splits.values():
        counts = np.bincount(split.labels, minlength=10)
        assert counts.min() == counts.max()
        assert split.images.shape[1:] == (28, 28) and split.images.max() > 200  # real ink, not blank


def test_captions_in_two_languages_and_fusion_targets():
    captions = read_captions()
    assert {c.lang for c in captions} == {"en", "zh"}
    assert {c.number for c in captions} == set(range(10))
    assert (tokenize("加九") > 1).sum() == 2  # every Chinese character is a known token
    val = load_task("mnist-fusion", "val")
    assert val.inputs["image"].shape == (1000, 1, 28, 28) and val.inputs["tokens"].shape == (1000, 8)
    digits = read_split("val")
    assert not np.array_equal(val.labels, digits.labels)  # the target is not the digit alone
