"""OpenVINO int8-dynamic: the CPU plugin's activation group size is chosen on the calibration data (the largest
that divides every int8 layer's input and keeps the profile's output gates), recorded in the manifest, and the
artifact is opened with it everywhere."""
from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("openvino")

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.backends.openvino_quant import GROUP_SIZES
from edgekit.backends.openvino_session import DEFAULT_GROUP_SIZE
from edgekit.config import Gates, Threshold, load_profile

BASE = load_profile("openvino-cpu-int8-dynamic")


def _profile(name: str, gates: Gates | None = None, **quantization) -> object:
    return replace(BASE, name=name, gates=gates or BASE.gates,
                   quantization=replace(BASE.quantization, **quantization))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """zoo:transformer (64-wide layers) as shipped, under a cosine gate no int8 model keeps, and with a group size
    the profile sets, all calibrated; and as shipped without calibration data."""
    impossible = Gates(outputs={"*": {"cosine": Threshold(warn=1.0, fail=0.5)}})
    profiles = [BASE, _profile("ov-groups-impossible", impossible), _profile("ov-groups-set", dynamic_group_size=16)]
    root = tmp_path_factory.mktemp("groups")
    calibrated = export("zoo:transformer", profiles, root / "calibrated", calib="task:calib")
    bare = export("zoo:transformer", [BASE], root / "bare")
    return {r.target: (calibrated.folder / r.target, r) for r in calibrated.rows} | \
        {"bare": (bare.folder / BASE.name, bare.rows[0])}


def _record(runs, name: str) -> tuple[dict, dict, object]:
    folder, row = runs[name]
    assert row.stage is None, row.reason
    manifest = read_manifest(folder / "manifest.json")
    return manifest.extra["quantization"], manifest.extra["runtime"]["config"], manifest


def test_the_largest_group_that_keeps_the_gates_is_chosen_and_opened_with(runs):
    quant, config, manifest = _record(runs, BASE.name)
    groups = quant["dynamic_groups"]
    # 128 does not divide the zoo transformer's 64-wide rows: 64 is the largest candidate, and it keeps the gates
    assert groups["group_size"] == 64 and list(groups["tried"]) == ["64"], groups
    assert groups["tried"]["64"]["logits"]["cosine"] >= BASE.gates.for_output("logits")["cosine"].warn
    assert config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "64" and "group size 64" in quant["activations"]
    # the session that read the precision back compiled with it, as validation, bench and bundles do
    assert manifest.precision.evidence["compile_config"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "64"
    assert quant["calibration_samples"] > 0  # it judged on the calibration data, and says so


def test_gates_no_group_keeps_fall_back_to_the_smallest_and_say_so(runs):
    quant, config, _ = _record(runs, "ov-groups-impossible")
    groups = quant["dynamic_groups"]
    assert groups["group_size"] == min(GROUP_SIZES) and "none kept" in groups["chosen"]
    assert [int(g) for g in groups["tried"]] == [g for g in GROUP_SIZES if 64 % g == 0]
    assert config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == str(min(GROUP_SIZES))


def test_a_group_size_the_profile_sets_is_used_as_it_is(runs):
    quant, config, _ = _record(runs, "ov-groups-set")
    assert quant["dynamic_groups"] == {"group_size": 16, "chosen": "set by the profile"}
    assert config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "16"
    assert quant["calibration_samples"] == 0  # nothing was judged on it


def test_without_calibration_data_the_usual_group_is_kept(runs):
    quant, config, _ = _record(runs, "bare")
    assert quant["dynamic_groups"]["group_size"] == DEFAULT_GROUP_SIZE
    assert "no calibration samples" in quant["dynamic_groups"]["chosen"]
    assert config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == str(DEFAULT_GROUP_SIZE)
    assert quant["calibration_samples"] == 0
