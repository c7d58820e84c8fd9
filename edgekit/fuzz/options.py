"""The fuzzer's options, apart from its code: the CLI builds its parser without importing torch."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``edgekit fuzz`` (and of ``python -m edgekit.fuzz``, which its own processes run)."""
    parser.add_argument("--models", type=int, required=True, help="how many random models")
    parser.add_argument("--seed", type=int, default=0, help="model i of seed S is the same whatever --models is")
    parser.add_argument("--out", required=True, help="folder for the model file, fuzz.json and (with --keep) runs")
    parser.add_argument("--int8", action="store_true", help="also every backend's cpu-int8 profile")
    parser.add_argument("--keep", action="store_true", help="keep each model's run folder")
    parser.add_argument("--jobs", type=int, default=1, help="models exported in parallel processes")
    parser.add_argument("--model-timeout", type=float, default=900.0,
                        help="seconds one model may take (all its targets) before it is killed and its targets "
                             "are TIMEOUT")
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)  # set for --jobs children
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # one model, in its own process


def to_argv(args: argparse.Namespace) -> list[str]:
    """The campaign's options as words again, for its child processes (without --shard and --one)."""
    words = ["--models", str(args.models), "--seed", str(args.seed), "--out", str(args.out),
             "--jobs", str(args.jobs), "--model-timeout", repr(args.model_timeout)]
    return words + ["--int8"] * args.int8 + ["--keep"] * args.keep
