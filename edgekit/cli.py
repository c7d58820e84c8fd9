"""The edgekit command line: argparse subcommands over edgekit.api, no logic of its own.

Exit codes: 0 every target passed (or warned), 1 a gate or a target failed, 2 bad input."""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from pathlib import Path

from edgekit._version import __version__
from edgekit.console import console, third_party_output
from edgekit.errors import EdgekitError, clean
from edgekit.fsutil import folder_lock, scratch_beside

DEMO_MODELS = ("cnn", "attention", "fusion", "transformer")


@contextlib.contextmanager
def _working_on(args: argparse.Namespace, folder: Path):
    """The command has ``folder`` to itself (:func:`edgekit.fsutil.folder_lock`); temporary files go to a scratch
    folder beside it (:func:`edgekit.fsutil.scratch_beside`); what converters and runtimes print goes to
    edgekit.log in it, unless -v. A folder to read that does not exist gets neither (nothing is created for it):
    the command then says what is wrong with it."""
    if args.command not in ("export", "demo") and not folder.is_dir():
        yield
        return
    with folder_lock(folder, args.command), scratch_beside(folder), \
            third_party_output(None if args.verbose else folder):
        yield


def _progress(message: str) -> None:
    print(f"  .. {message}", file=console(), flush=True)


def _print_result(result) -> None:
    from edgekit.report import compression_lines, rows_table, text_table

    print(f"\n{result.source} -> {result.folder} ({result.validated_on})")
    for line in compression_lines(result):
        print(line)
    print(text_table(rows_table(result)))


def cmd_export(args: argparse.Namespace) -> int:
    from edgekit.api import export
    from edgekit.compress.recipe import CompressionRecipe

    if args.segments is not None:
        from edgekit.segments.export import export_segments
        from edgekit.segments.report import text

        unused = [f"--{k.replace('_', '-')}" for k in ("prune", "recover", "dynamic", "lengths", "resume")
                  if getattr(args, k)]
        if unused:
            raise EdgekitError(f"--segments does not take {', '.join(unused)} (yet); export without them")
        with _working_on(args, Path(args.out)):
            segmented = export_segments(args.source, args.segments, args.target, args.out, calib=args.calib,
                                        data=args.data, preprocess=args.preprocess, allow_pickle=args.allow_pickle,
                                        progress=_progress)
        print(f"\n{text(segmented)}")
        return 1 if segmented.failed else 0

    recipe = CompressionRecipe.parse(args.prune, args.recover, args.recover_epochs, args.recover_lr)
    with _working_on(args, Path(args.out)):
        result = export(args.source, args.target, args.out, calib=args.calib, data=args.data,
                        preprocess=args.preprocess, dynamic=args.dynamic, lengths=args.lengths,
                        compression=recipe, allow_pickle=args.allow_pickle, resume=args.resume,
                        limits=dict(args.limit or ()), progress=_progress)
    _print_result(result)
    return 1 if result.failed else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from edgekit.api import validate_run

    with _working_on(args, Path(args.run_dir)):
        result = validate_run(args.run_dir, progress=_progress)
    _print_result(result)
    return 1 if result.failed else 0


def _bench_timing(args: argparse.Namespace):
    from edgekit.bench.run import Timing

    timing = Timing.quick() if args.quick else Timing()
    return timing if args.timeout is None else Timing(timing.min_runs, timing.min_seconds,
                                                       timing.throughput_seconds, args.timeout)


def _bench(run_dir: str | Path, args: argparse.Namespace):
    """Bench one run folder with a progress bar on stderr, then print its table."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from edgekit.bench.run import bench

    bar_console = Console(file=console())
    with Progress(TextColumn("  bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=bar_console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def on_row(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)
            if not bar_console.is_terminal:
                _progress(f"bench [{done}/{total}] {what}")
        with _working_on(args, Path(run_dir)):
            result = bench(run_dir, timing=_bench_timing(args), explain=not args.no_explain,
                           allow_pickle=args.allow_pickle, on_row=on_row)
    _print_bench(result)
    return result


def _print_bench(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgekit.report.render import main_table

    rows = main_table(result)
    table = Table(title=f"{result.source} -> {result.folder}", title_justify="left")
    for i, header in enumerate(rows[0]):
        table.add_column(header, overflow="fold", no_wrap=i == 0)
    colors = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}
    for row in rows[1:]:
        table.add_row(*row[:1], f"[{colors.get(row[1], 'white')}]{row[1]}[/]", *row[2:])
    console = Console()
    (console if console.is_terminal else Console(width=240)).print(table)  # logs and pipes: no folding
    print(f"reports: {result.folder}/report.html, report.md, report.json, junit.xml")


def cmd_bench(args: argparse.Namespace) -> int:
    result = _bench(args.run_dir, args)
    failed = result.failed
    if _segmented(args.run_dir):  # the chain too: a pipeline of the segments against the unsplit model
        from edgekit.report import text_table
        from edgekit.segments.bench import bench_segments
        from edgekit.segments.report import pipeline_table, stage_lines

        with _working_on(args, Path(args.run_dir)):
            pipeline = bench_segments(args.run_dir, _bench_timing(args))
        print(text_table(pipeline_table(pipeline)))
        print("\n".join(stage_lines(pipeline)))
        failed = failed or pipeline.stage is not None
    return 1 if failed else 0


def _segmented(run_dir: str | Path) -> bool:
    from edgekit.segments.record import SEGMENTS_FILE

    return (Path(run_dir) / SEGMENTS_FILE).is_file()


def cmd_bundle(args: argparse.Namespace) -> int:
    from edgekit.bundle.make import bundle

    if args.target is None:
        if not _segmented(args.run_dir):
            raise EdgekitError("bundle needs --target NAME (a segmented run bundles all of its segments without it)")
        from edgekit.segments.bundle import bundle_segments

        folder = bundle_segments(args.run_dir, args.out)
        print(f"bundle: {folder}  (on the device: python {folder}/run.py --check | --bench)")
        return 0
    folder = bundle(args.run_dir, args.target, args.out, c_array=args.c_array)
    print(f"bundle: {folder}  (on the device: python {folder}/run.py --check | --bench | --input IMAGE)")
    return 0


def _device_line(result) -> str:
    if result.error:
        return f"{result.device} {result.target}: ERROR {result.error}"
    b = result.bench
    return (f"{result.device} {result.target}: check {result.check['status']} ({result.check['samples']} golden "
            f"samples); p50 {b['latency_1t']['median_ms']:.3f} ms (1 thread), {b['latency_all']['median_ms']:.3f} ms "
            f"({b['latency_all']['threads']} threads)")


def cmd_device_bench(args: argparse.Namespace) -> int:
    from edgekit.bundle.device import device_bench, record
    from edgekit.bundle.farm import device_farm, load_devices

    if (args.device is None) == (args.devices is None):
        raise EdgekitError("device-bench needs either --device URI or --devices FARM.toml")
    if args.devices:
        results = device_farm(args.bundle, load_devices(args.devices), seconds=args.seconds)
    else:
        results = [device_bench(args.bundle, args.device, python=args.python, seconds=args.seconds,
                                identity=args.identity, known_hosts=args.known_hosts)]
    for result in results:
        if args.run:
            record(args.run, result)
        print(_device_line(result))
    if args.run:
        print(f"rows added to {args.run}/report.*")
    return 1 if any(r.error or r.check["status"] == "FAIL" for r in results) else 0


def _print_check(source: str, results: list) -> None:
    print(f"\n{source}")
    for result in results:
        errors = sum(f.severity == "error" for f in result.findings)
        warnings = len(result.findings) - errors
        status = "OK" if not result.findings else "OK with warnings" if not errors else "CANNOT WORK"
        counts = ", ".join(f"{n} {what}{'s' if n > 1 else ''}" for n, what in ((errors, "error"),
                                                                             (warnings, "warning")) if n)
        print(f"{result.target}: {status}" + (f" ({counts})" if counts else "") + f"  [{result.seconds:.1f} s]")
        for f in result.findings:
            where = " ".join(filter(None, (f.op, f"at {f.module_path or '<root>'}" if f.module_path is not None
                                           else None)))
            print(f"  {f.severity:7s} {f.kind}: " + (f"{where}: " if where else "") + f.message)


def cmd_check(args: argparse.Namespace) -> int:
    from edgekit.api import check

    results = check(args.source, args.target, allow_pickle=args.allow_pickle, dynamic=args.dynamic,
                    progress=_progress)
    _print_check(args.source, results)
    return 0 if all(r.ok for r in results) else 1


def cmd_ledger(args: argparse.Namespace) -> int:
    from edgekit.ledger import LEDGER_JSON, LEDGER_MD, ledger, summary_lines, table
    from edgekit.report import text_table

    with _working_on(args, Path(args.run_dir)):
        result = ledger(args.run_dir, samples=args.samples, allow_pickle=args.allow_pickle, progress=_progress)
    print(f"\n{result.source}: SQNR dB per layer on {result.samples} samples (- unmatched, ! below the layer gate)")
    print(text_table(table(result)))
    print("\n".join(summary_lines(result)))
    print(f"ledger: {Path(args.run_dir) / LEDGER_JSON}, {LEDGER_MD}")
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    from edgekit.fuzz.run import run

    return run(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from edgekit.report import text_table
    from edgekit.sweep.report import table
    from edgekit.sweep.run import sweep

    result = sweep(args.sweep_file, args.out, ray=args.ray, jobs=args.jobs, progress=_progress)
    print(f"\n{result.sweep.path} -> {result.folder}: {len(result.cells)} cells, {result.ran} ran, "
          f"{result.reused} reused ({result.where})")
    print(text_table([row[:10] for row in table(result)]))
    print(f"reports: {result.folder}/sweep.html, sweep.md, sweep.json")
    return 1 if result.failed else 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from edgekit.config import known_profiles, load_profile

    for name, path in known_profiles().items():
        try:
            p = load_profile(str(path))
            print(f"{name:28s} {p.backend:9s} {p.precision:13s} {p.description}")
        except EdgekitError as exc:
            print(f"{name:28s} INVALID  {exc}")
    print("\nto make your own: edgekit profiles show NAME > my-target.toml, edit it, pass --target my-target.toml",
          file=console())
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    from edgekit.config import load_profile

    print(load_profile(args.name).text, end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edgekit.api import export
    from edgekit.backends.base import demo_targets
    from edgekit.report import summary_table, text_table
    from edgekit.report.render import bench_summary_table

    results, benched, failed = [], [], False
    targets = args.target or ",".join(demo_targets())
    for name in args.models:
        with _working_on(args, Path(args.out) / name):
            results.append(export(f"zoo:{name}", targets, Path(args.out) / name, calib="task:calib",
                                  progress=_progress))
        failed |= results[-1].failed
        if args.no_bench:
            _print_result(results[-1])
        else:
            benched.append(_bench(Path(args.out) / name, args))
            failed |= benched[-1].failed
    print("\nsummary: val accuracy on 1000 real MNIST digits, agreement and error against torch"
          + ("" if args.no_bench else "; batch-1 latency with one thread (quick timing), x = torch eager / this"))
    print(text_table(summary_table(results) if args.no_bench else bench_summary_table(benched)))
    print(f"\nrun folders (artifacts, manifests, report.html/.md/.json, junit.xml) are in {args.out}/")
    return 1 if failed else 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds > 0")
    return value


def _limit(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=NUMBER, e.g. export=600 or memory_mb=4000") from None
    return key.strip(), int(number) if number.is_integer() else number


def _lengths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give lengths as N,N,... (e.g. 16,32)") from None


def _bench_options(p: argparse.ArgumentParser, quick_default: bool = False) -> None:
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=quick_default,
                   help="short timing (50 runs / 0.2 s per mode) for demos; the default times >= 200 runs and 1 s")
    p.add_argument("--timeout", type=_positive_seconds,
                   help="seconds before a worker is killed and its row is TIMEOUT")
    p.add_argument("--no-explain", action="store_true", help="skip the occlusion maps")


SOURCE_HELP = ("zoo:NAME | hf:FOLDER_OR_ID | timm:NAME | torchvision:NAME | path/file.py:factory | "
               "package.module:factory | file.pt2")
DATA_KINDS = ("an image folder (class sub-folders give labels), a .npz of arrays named by the inputs "
              "(optional labels), a text file (.txt one sample a line, .jsonl, .csv with a text column) "
              "tokenized by the model's tokenizer, FILE.py:FACTORY yielding input dicts, or task:SPLIT")
Subcommands = argparse._SubParsersAction


def _add_export(sub: Subcommands) -> None:
    p = sub.add_parser("export", help="export a model for one or more targets and validate each against torch")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--target", required=True, help="profile names or TOML paths, comma-separated")
    p.add_argument("--out", required=True, help="the run folder to write (replaced if it is an earlier run)")
    p.add_argument("--segments", metavar="N|MODULE,...",
                   help="split the model into N segments (cuts balanced by FLOPs at top-level module boundaries) "
                   "or at the named modules (each begins a segment); --target then names one target per segment, "
                   "in order. The chain is validated end to end and benched as a pipeline against the unsplit "
                   "model")
    p.add_argument("--calib", metavar="DATA", help=f"calibration data for int8: {DATA_KINDS}; "
                   "default: the zoo model's calib split, else required for int8")
    p.add_argument("--data", metavar="DATA", help=f"validation data (accuracy, agreement, errors): {DATA_KINDS}; "
                   "default: the zoo model's val split, else only the example inputs")
    p.add_argument("--preprocess", metavar="PRESET|FILE.toml",
                   help="how an image becomes the image input: mnist, imagenet, inception, or a TOML file; "
                   "overrides the model's own")
    p.add_argument("--dynamic", metavar="INPUT:AXIS,...",
                   help="axes beyond the batch whose size varies, sharing one length (e.g. "
                   "input_ids:1,attention_mask:1); overrides the model's own")
    p.add_argument("--lengths", type=_lengths, metavar="N,N,...",
                   help="the lengths to validate at and to make signatures for on runtimes with fixed shapes; "
                   "default: half and all of the example's")
    p.add_argument("--prune", help="l1:AMOUNT (per layer), l1-global:AMOUNT, or channels:AMOUNT (structured)")
    p.add_argument("--recover", choices=("finetune", "distill"), help="recover accuracy after pruning")
    p.add_argument("--recover-epochs", type=int, default=3, help="epochs of fine-tuning or distillation")
    p.add_argument("--recover-lr", type=float, default=2e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading a .pt2 archive (uses pickle)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the targets an interrupted export to --out had finished (same profile, hashes "
                   "checked, validated again)")
    p.add_argument("--limit", type=_limit, action="append", metavar="KEY=VALUE",
                   help="override a [limits] key of every target for this export, e.g. export=600 (seconds) or "
                   "memory_mb=4000; repeat for more keys")
    p.set_defaults(func=cmd_export)


def _add_check(sub: Subcommands) -> None:
    p = sub.add_parser("check", help="export nothing; say per target what will not convert or will run "
                       "differently (ops without a conversion or a kernel, pinned dims, layout transposes), with "
                       "the module path of each op; exit 1 when a target cannot work")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--target", required=True, help="profile names or TOML paths, comma-separated")
    p.add_argument("--dynamic", metavar="INPUT:AXIS,...", help="axes beyond the batch whose size varies")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading a .pt2 archive (uses pickle)")
    p.set_defaults(func=cmd_check)


def _add_validate(sub: Subcommands) -> None:
    p = sub.add_parser("validate", help="validate every artifact of a run folder again on its runtime")
    p.add_argument("run_dir", help="a run folder written by edgekit export")
    p.set_defaults(func=cmd_validate)


def _add_bench(sub: Subcommands) -> None:
    p = sub.add_parser("bench", help="run every artifact of a run folder on its runtime, each in a worker "
                       "process: speed, memory, size, accuracy, attention and occlusion against torch")
    p.add_argument("run_dir", help="a run folder written by edgekit export")
    _bench_options(p)
    p.add_argument("--allow-pickle", action="store_true", help="the run's source is a .pt2 archive (uses pickle)")
    p.set_defaults(func=cmd_bench)


def _add_bundle(sub: Subcommands) -> None:
    p = sub.add_parser("bundle", help="write what goes onto the device for one target of a run: model, manifest, "
                       "golden data, a runner that needs only numpy and the runtime")
    p.add_argument("run_dir", help="a run folder written by edgekit export")
    p.add_argument("--target", help="the target (profile name) of the run to bundle; a segmented run without it: "
                   "every segment and a runner that chains them")
    p.add_argument("--out", required=True, help="the bundle folder to write")
    p.add_argument("--c-array", action="store_true", help="also the model as a C array (c/g_model.h, .c) and a "
                   "C program that checks it against the model file")
    p.set_defaults(func=cmd_bundle)


def _add_device_bench(sub: Subcommands) -> None:
    p = sub.add_parser("device-bench", help="copy a bundle to a device, run its check and bench there, bring the "
                       "results back")
    p.add_argument("bundle", help="a bundle folder written by edgekit bundle")
    p.add_argument("--device", help="local | ssh://user@host[:port] | adb://SERIAL")
    p.add_argument("--devices", metavar="FARM.toml", help="many devices at once: [[device]] tables with uri (and "
                   "optional name, python, identity, known_hosts); a row per device")
    p.add_argument("--python", default="python3", help="the Python on the device (with numpy and the runtime)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per latency mode on the device")
    p.add_argument("--identity", help="ssh private key file")
    p.add_argument("--known-hosts", help="ssh known_hosts file to use (new host keys are accepted into it)")
    p.add_argument("--run", help="a run folder whose reports get the device's rows")
    p.set_defaults(func=cmd_device_bench)


def _add_ledger(sub: Subcommands) -> None:
    p = sub.add_parser("ledger", help="per layer, every artifact's intermediate tensors on its runtime against "
                       "the torch module that made them: SQNR per target, the first diverging layer")
    p.add_argument("run_dir", help="a run folder written by edgekit export")
    p.add_argument("--samples", type=int, default=8, help="reference inputs to run (default 8)")
    p.add_argument("--allow-pickle", action="store_true", help="the run's source is a .pt2 archive (uses pickle)")
    p.set_defaults(func=cmd_ledger)


def _add_sweep(sub: Subcommands) -> None:
    p = sub.add_parser("sweep", help="every source x recipe x target of a sweep file, each cell exported, "
                       "validated and benched once (finished cells are reused: rerun to resume), locally or on Ray")
    p.add_argument("sweep_file", help="a sweep TOML file: [sweep], [[source]], [recipe.NAME], [targets]")
    p.add_argument("--out", required=True, help="the sweep folder (its cells are the cache)")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run the cells as Ray tasks on this cluster "
                   "(pip install 'edgekit[ray]')")
    p.add_argument("--jobs", type=int, help="at most this many cells at once here (default: cores / threads)")
    p.set_defaults(func=cmd_sweep)


def _add_fuzz(sub: Subcommands) -> None:
    from edgekit.fuzz.options import add_arguments

    p = sub.add_parser("fuzz", help="random small networks through every backend (fp32, and int8 with --int8), each "
                       "target classified; exit 1 if one passed its gates while it computes something else")
    add_arguments(p)
    p.set_defaults(func=cmd_fuzz)


def _add_profiles(sub: Subcommands) -> None:
    p = sub.add_parser("profiles", help="list the target profiles, one line each (shipped ones, ./targets and "
                       "$EDGEKIT_TARGETS)")
    p.set_defaults(func=cmd_profiles)
    shows = p.add_subparsers(dest="profiles_command", metavar="show")
    show = shows.add_parser("show", help="print one profile as TOML, to copy and edit")
    show.add_argument("name", help="a profile name (see `edgekit profiles`) or a TOML path")
    show.set_defaults(func=cmd_profile_show)


def _add_demo(sub: Subcommands) -> None:
    p = sub.add_parser("demo", help="the whole chain on the built-in models and sample data")
    p.add_argument("--out", default="runs/demo", help="the folder of the demo's run folders, one per model")
    p.add_argument("--target", help="default: every installed backend's demo profiles (fp32 and int8)")
    p.add_argument("--models", nargs="+", choices=DEMO_MODELS, default=list(DEMO_MODELS))
    p.add_argument("--no-bench", action="store_true", help="export and validate only")
    _bench_options(p, quick_default=True)
    p.set_defaults(func=cmd_demo, allow_pickle=False)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports no runtime (the docs render it, see docs/hooks/cli_reference.py)."""
    parser = argparse.ArgumentParser(prog="edgekit", description="Export PyTorch models to edge runtimes and "
                                     "prove they still work there.")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__} (Python "
                        f"{sys.version.split()[0]}, {sys.platform})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show what converters and runtimes print (else it goes to edgekit.log in the folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_export, _add_check, _add_validate, _add_bench, _add_bundle, _add_device_bench, _add_ledger,
                _add_sweep, _add_fuzz, _add_profiles, _add_demo):  # in this order in --help and the docs
        add(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so staging folders and worker groups are cleaned up on the way out."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe is met here, not at interpreter exit
        return code
    except EdgekitError as exc:
        print(f"edgekit: error: {clean(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `edgekit profiles | head`: the reader has gone, as with any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141
    except OSError as exc:  # read-only file system, disk full, permission: one line naming the path
        where = f"{exc.filename}: " if exc.filename else ""
        full = "the disk is full: " if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
        print(f"edgekit: error: {full}{where}{exc.strerror or clean(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("edgekit: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:  # main() called from Python (tests, scripts): the caller's handler is back
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
