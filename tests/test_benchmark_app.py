"""benchmarks/benchmark_app.py reads benchmark_app's statistics in whatever unit it printed. The texts below are
the tail of real benchmark_app runs (openvino 2026.4.1, AMD EPYC with AVX-512, 2026-11): EfficientNet-Lite0 IRs (ms)
and a near-empty model (us, which benchmark_app switches to when the average is under 1 ms). The script runs in its
own process, from the command line: tests import nothing from benchmarks/."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "benchmark_app.py"


def _script(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def _report(*args: str, stdin: str = "") -> dict:
    done = _script(*args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _parse(text: str) -> dict:
    return _report("--parse", stdin=text)

EFFICIENTNET_FP32_1_THREAD = """\
[Step 10/11] Measuring performance (Start inference synchronously, limits: 3000 ms duration)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 13.40 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            328 iterations
[ INFO ] Duration:         3000.08 ms
[ INFO ] Latency:
[ INFO ]    Median:        8.96 ms
[ INFO ]    Average:       9.01 ms
[ INFO ]    Min:           8.81 ms
[ INFO ]    Max:           10.95 ms
[ INFO ] Throughput:   109.33 FPS
"""

EFFICIENTNET_INT8_2_THREADS = """\
[ INFO ] First inference took 4.67 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            783 iterations
[ INFO ] Duration:         3003.27 ms
[ INFO ] Latency:
[ INFO ]    Median:        3.35 ms
[ INFO ]    Average:       3.78 ms
[ INFO ]    Min:           1.85 ms
[ INFO ]    Max:           10.46 ms
[ INFO ] Throughput:   260.72 FPS
"""

TINY_MODEL_MICROSECONDS = """\
[Step 10/11] Measuring performance (Start inference synchronously, limits: 1000 ms duration)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 12.61 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            21200 iterations
[ INFO ] Duration:         1000.02 ms
[ INFO ] Latency:
[ INFO ]    Median:        24.26 us
[ INFO ]    Average:       38.67 us
[ INFO ]    Min:           23.14 us
[ INFO ]    Max:           5409.61 us
[ INFO ] Throughput:   21199.64 FPS
"""

TINY_MODEL_PERCENTILE_90 = """\
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            21628 iterations
[ INFO ] Duration:         1000.04 ms
[ INFO ] Latency:
[ INFO ]    90 percentile:     32.99 us
[ INFO ]    Average:       38.38 us
[ INFO ]    Min:           23.89 us
[ INFO ]    Max:           5401.70 us
[ INFO ] Throughput:   21627.15 FPS
"""

# a dynamic-batch model run with two shapes (-data_shape [1,3,32,32][2,3,32,32] -pcseq): a block per shape group
# follows the whole run's
SHAPE_GROUPS = """\
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            5702 iterations
[ INFO ] Duration:         1000.12 ms
[ INFO ] Latency:
[ INFO ]    Median:        59.29 us
[ INFO ]    Average:       64.98 us
[ INFO ]    Min:           42.18 us
[ INFO ]    Max:           381.53 us
[ INFO ] Latency for each data shape group:
[ INFO ] 1. image: [1,3,32,32]
[ INFO ]    Median:     58.53 us
[ INFO ]    Average:    64.57 us
[ INFO ]    Min:        42.18 us
[ INFO ]    Max:        260.19 us
[ INFO ] 2. image: [2,3,32,32]
[ INFO ]    Median:     59.84 us
[ INFO ]    Average:    65.38 us
[ INFO ]    Min:        43.75 us
[ INFO ]    Max:        381.53 us
[ INFO ] Throughput:   8551.97 FPS
"""

MISSING_MODEL = """\
RuntimeError: Exception from src/inference/src/cpp/core.cpp:84:
Check 'util::directory_exists(path) || util::file_exists(path)' failed at src/frontends/common/src/frontend.cpp:117:
FrontEnd API failed with GeneralFailure:
ir: Could not open the file: "/tmp/effnet_scratch/missing.xml"
"""


@pytest.mark.parametrize("text, expected", [
    (EFFICIENTNET_FP32_1_THREAD, (8.96, 50, 9.01, 8.81, 10.95, 109.33, 328)),
    (EFFICIENTNET_INT8_2_THREADS, (3.35, 50, 3.78, 1.85, 10.46, 260.72, 783)),
    (TINY_MODEL_MICROSECONDS, (0.02426, 50, 0.03867, 0.02314, 5.40961, 21199.64, 21200)),
    (TINY_MODEL_PERCENTILE_90, (0.03299, 90, 0.03838, 0.02389, 5.4017, 21627.15, 21628)),
], ids=["ms", "ms-int8", "us", "us-percentile"])
def test_reads_every_statistic_in_ms(text, expected):
    report = _parse(text)
    got = tuple(report[k] for k in ("median_ms", "percentile", "average_ms", "min_ms", "max_ms", "throughput_fps",
                                    "iterations"))
    assert got == pytest.approx(expected, rel=1e-9)


def test_the_whole_run_wins_over_the_shape_groups():
    report = _parse(SHAPE_GROUPS)
    assert tuple(report[k] for k in ("median_ms", "average_ms", "min_ms", "max_ms", "throughput_fps")) == \
        pytest.approx((0.05929, 0.06498, 0.04218, 0.38153, 8551.97))


def test_no_statistics_is_an_error():
    done = _script("--parse", stdin=MISSING_MODEL)
    assert done.returncode == 1 and "no latency" in done.stderr and not done.stdout


def test_a_failing_benchmark_app_raises_with_its_output(tmp_path):
    pytest.importorskip("openvino")
    done = _script(str(tmp_path / "missing.xml"), "--threads", "1", "--seconds", "1")
    assert done.returncode == 1 and not done.stdout
    assert re.search(r"benchmark_app failed \(exit code 1\).*Could not open the file", done.stderr), done.stderr


def test_reads_this_machines_benchmark_app(tmp_path):
    """The live tool on a near-empty model (so its lines are in us on any CPU): catches a format change."""
    ov = pytest.importorskip("openvino")
    import numpy as np
    import openvino.opset13 as ops

    image = ops.parameter([1, 3, 32, 32], np.float32, name="image")
    logits = ops.matmul(ops.reduce_mean(image, np.array([2, 3]), keep_dims=False),
                        ops.constant(np.ones((3, 10), np.float32)), False, False)
    ov.save_model(ov.Model([logits], [image]), str(tmp_path / "tiny.xml"), compress_to_fp16=False)
    report = _report(str(tmp_path / "tiny.xml"), "--threads", "1", "--seconds", "1")
    assert 0 < report["min_ms"] <= report["median_ms"] <= report["max_ms"]
    # the unit: the fastest run of a near-empty model is microseconds (read in ms, about 0.05), even on a loaded
    # machine where the slowest runs wait for a core; a us/ms mix-up would read it 1000 times larger
    assert report["min_ms"] < 5
    assert report["iterations"] > 10 and report["throughput_fps"] > 10
