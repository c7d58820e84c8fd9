"""Shared fixtures: every zoo model exported once per registered backend, reused by the tests."""
from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
# Two workers on two cores, each with torch's OpenMP pool and export workers beside it: spinning OpenMP threads
# then wait whole time slices for a descheduled peer. Measured (test_hf + test_quantize + test_gptq at -n 2): the
# BERT fixture's training took 62.9 s spinning and 7.8 s passive, the three files 150 s and 105 s. Set before
# torch loads libgomp, which reads it once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgekit.api import RunResult, export  # noqa: E402
from edgekit.backends import registered  # noqa: E402
from edgekit.config import load_profile  # noqa: E402
from edgekit.sources.vision import ensure_torchvision_importable  # noqa: E402
from edgekit.zoo import ZOO  # noqa: E402

ensure_torchvision_importable()  # before any test imports transformers or timm (they import torchvision)

FIXTURES = Path(__file__).parent / "fixtures"


def fp32_profile(backend: str) -> str:
    return f"{backend}-cpu-fp32"


BACKENDS = [b for b in registered() if (Path(__file__).parents[1] / "targets" / f"{fp32_profile(b)}.toml").is_file()]


def write_digits(split: str, dest: Path, class_folders: bool = True, limit: int | None = None, every: int = 1) -> Path:
    """A user's image folder of real digits: every ``every``-th digit of a sample_data MNIST split (up to ``limit``)
    written as a PNG file, ``dest/<label>/<name>`` or, without class folders, ``dest/<name>`` ("val/0003.png" is
    named 0003.png). Returns ``dest``."""
    from PIL import Image

    from edgekit.data.mnist import read_split

    digits = read_split(split)
    for file, image, label in list(zip(digits.files, digits.images, digits.labels))[::every][:limit]:
        folder = dest / str(label) if class_folders else dest
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / Path(file).name)
    return dest


# the files that take longest (measured: the slowest first), started first so that, with pytest-xdist's
# --dist loadfile, no long file starts last on one worker while the other waits
LONGEST_FIRST = ("test_hf.py", "test_mixed.py", "test_zoo_backends.py", "test_real_models.py", "test_reliability.py",
                 "test_sweep.py", "test_vision_sources.py", "test_segments.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


T = TypeVar("T")


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """The temporary folder every pytest-xdist worker of this session shares (the base folder without xdist)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def made_once(root: Path, name: str, make: Callable[[Path], T]) -> T:
    """``make(root / name)``, run by the first worker of the session that asks, under a file lock; the others wait
    for it and read its pickled result (the suite's own objects, never a user's file). An ExecuTorch export of a
    zoo model takes up to a minute, and each worker used to make every zoo model it needed itself."""
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = root / f"{name}.pickle"
        if made.is_file():
            return pickle.loads(made.read_bytes())
        value = make(root / name)
        made.write_bytes(pickle.dumps(value))
        return value


_CACHE: dict[str, RunResult] = {}


@pytest.fixture(scope="session")
def zoo_run(shared_root):
    """zoo_run(model) -> the run of that zoo model exported to every backend's fp32 profile (made once per session,
    across workers). Tests read its folder or copy it; they never change it."""
    def get(model: str) -> RunResult:
        if model not in _CACHE:
            _CACHE[model] = made_once(shared_root, f"zoo-{model}", lambda folder: export(
                f"zoo:{model}", [load_profile(fp32_profile(b)) for b in BACKENDS], folder))
        return _CACHE[model]
    return get


@pytest.fixture(scope="session")
def benched(zoo_run, shared_root):
    """zoo:attention on every backend (fp32), benched once with quick timing (once per session, across workers)."""
    from edgekit.bench.run import Timing, bench

    folder = zoo_run("attention").folder
    return made_once(shared_root, "bench-attention", lambda _: bench(folder, timing=Timing.quick()))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(params=list(ZOO))
def zoo_model(request) -> str:
    return request.param
