"""mkdocs hook: the target-profile reference, generated from ``edgekit/config.py`` at build time.

- ``reference/profile-keys.md``: every key a profile's TOML may set, with its type, default, allowed values, the
  backends that apply it, and its meaning (the ``Attributes:`` section of the dataclass that holds it).
- ``reference/profiles.md``: the profiles edgekit ships (``targets/*.toml``), one row each.

Drift check, after mkdocstrings' ``scripts/mkdocs_hooks.py``: the keys are not listed here. They are found by
probing ``edgekit.config.parse_profile`` with an unknown key in every table and reading the "allowed:" list it
answers with. A key the parser accepts without a documented meaning, a metric without one, or a shipped profile that
does not load is a warning, so ``mkdocs build --strict`` fails."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import logging
import re
from importlib import metadata
from typing import Any

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.profile_reference")

KEYS_PAGE = "reference/profile-keys.md"
PROFILES_PAGE = "reference/profiles.md"
EXAMPLE_PROFILE = "onnx-cpu-int8"
PROBE = "zz_undocumented_probe"
BASE = 'name = "probe"\nbackend = "onnx"\nprecision = "fp32"\n'
TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string",
         "tuple[int, ...]": "list of integers", "tuple[str, ...]": "list of strings"}


def _probe(extra: str) -> list[str]:
    """The keys ``parse_profile`` allows where ``extra`` puts the probe key, from its own error message."""
    from edgekit.config import parse_profile
    from edgekit.errors import EdgekitError

    try:
        parse_profile(BASE + extra, "<probe>")
    except EdgekitError as exc:
        found = re.search(rf"unknown key '{PROBE}' \(allowed: ([^)]*)\)", str(exc))
        if found:
            return [k.strip() for k in found.group(1).split(",")]
        raise RuntimeError(f"probing the profile parser with {extra!r}: unexpected error: {exc}") from None
    raise RuntimeError(f"the profile parser accepted the unknown key {PROBE!r} ({extra!r})")


def _markdown(text: str) -> str:
    """reST literals and roles of a docstring as markdown, on one line, safe in a table cell."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return " ".join(text.split()).replace("|", "\\|")


def attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style class docstring: name -> meaning."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in lines:
        return {}
    docs: dict[str, str] = {}
    current = None
    for line in lines[lines.index("Attributes:") + 1:]:
        item = re.match(r"^    (\w+): (.*)$", line)
        if item:
            current = item.group(1)
            docs[current] = item.group(2)
        elif current and line.startswith("        "):
            docs[current] += " " + line.strip()
        else:
            break
    names = {f.name for f in dataclasses.fields(cls)}
    for name in sorted(set(docs) - names):
        log.warning(f"{cls.__qualname__}'s docstring documents {name!r}, which is not one of its fields")
    return {k: _markdown(v) for k, v in docs.items()}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list, frozenset)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        return "table"
    return repr(value)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_toml(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "table" if dataclasses.is_dataclass(value) else f"`{_toml(value)}`"
    return "required"


def backend_options() -> dict[str, dict[str, Any]]:
    """Backend name -> its ``OPTIONS`` (the profile keys it applies), for edgekit's own backends, read from their
    source with ``ast``: importing them would import every runtime."""
    from edgekit import config
    from edgekit.backends.base import ENTRY_POINTS, Option

    names = {k: getattr(config, k) for k in dir(config) if k.isupper()}
    found = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        if not ep.value.startswith("edgekit."):
            continue
        spec = importlib.util.find_spec(ep.value)
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
        node = next((n.value for n in tree.body if isinstance(n, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "OPTIONS" for t in n.targets)), None)
        if node is None:
            log.warning(f"backend {ep.name!r} ({ep.value}) has no OPTIONS dict: its profile keys are not listed")
            continue
        try:
            found[ep.name] = eval(compile(ast.Expression(node), spec.origin, "eval"),  # noqa: S307 our own source
                                  {"__builtins__": {}, "Option": Option, **names})
        except Exception as exc:
            log.warning(f"backend {ep.name!r}: cannot read its OPTIONS ({exc})")
    return found


def _option_text(option: Any) -> str:
    parts = []
    if option.precisions is not None:
        parts.append(" / ".join(option.precisions))
    if option.values is not None:
        parts.append(", ".join(f"`{_toml(v)}`" for v in option.values))
    return f" ({'; '.join(parts)})" if parts else ""


def applied_by(key: str, backends: dict[str, dict[str, Any]]) -> str:
    """Which backends apply a ``section.key`` (a profile that sets a key its backend does not apply is refused)."""
    from edgekit.backends.base import COMMON_OPTIONS

    key = "quantization.augment" if key.startswith("quantization.augment.") else key
    if key in COMMON_OPTIONS:
        return "every backend" + _option_text(COMMON_OPTIONS[key])
    parts = [f"{name}{_option_text(options[key])}" for name, options in backends.items() if key in options]
    return "; ".join(parts) or "no shipped backend"


def _allowed() -> dict[str, tuple[str, ...]]:
    from edgekit import config

    return {"precision": config.PRECISIONS, "runtime.layout": config.LAYOUTS,
            "quantization.method": config.CALIBRATION_METHODS,
            "quantization.weight_rounding": config.WEIGHT_ROUNDINGS, "quantization.rank_by": config.RANKINGS}


def _key_table(section: str, keys: list[str], cls: type, fields_by_key: dict[str, str],
               backends: dict[str, dict[str, Any]] | None) -> list[str]:
    from edgekit.config import RANGES

    docs = attribute_docs(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    order = list(fields)
    keys = sorted(keys, key=lambda k: order.index(fields_by_key.get(k, k)) if fields_by_key.get(k, k) in order
                  else len(order))  # the dataclass's order; keys it does not hold last
    allowed = _allowed()
    registered = [ep.name for ep in metadata.entry_points(group="edgekit.backends")]
    header = "| Key | Type | Default | Meaning |" + (" Applied by |" if backends is not None else "")
    lines = [header, "|---|---|---|---|" + ("---|" if backends is not None else "")]
    for key in keys:
        name = fields_by_key.get(key, key)
        full = f"{section}.{key}" if section else key
        meaning = docs.get(name)
        if not meaning:
            log.warning(f"profile key {full!r} is accepted by edgekit.config.parse_profile but has no documented "
                        f"meaning: add it to the Attributes: of {cls.__qualname__} in edgekit/config.py")
            meaning = "**undocumented**"
        f = fields.get(name)
        kind = "table" if f and str(f.type).startswith("dict[") else TYPES.get(str(f.type), str(f.type)) if f else "?"
        default = _default(f) if f else "?"
        if full in allowed:
            meaning += " One of " + ", ".join(f"`{v}`" for v in allowed[full]) + "."
        if full == "backend":
            meaning += " Shipped: " + ", ".join(f"`{v}`" for v in sorted(registered)) + "; or a plugin's."
        if key in RANGES and kind in ("integer", "number", "list of integers"):
            low, high = (f"{v:,}" if isinstance(v, int) else f"{v:g}" for v in RANGES[key])
            meaning += f" Range {low} to {high}."
        row = f"| `{key}` | {kind} | {default} | {meaning} |"
        if backends is not None:
            row += f" {applied_by(full, backends)} |"
        lines.append(row)
    return lines + [""]


def keys_page() -> str:
    from edgekit import config
    from edgekit.resources import targets_dir

    backends = backend_options()
    top = _probe(f"{PROBE} = 1\n")
    sections = {"runtime": config.RuntimeOptions, "quantization": config.QuantRecipe, "gates": config.Gates,
                "validation": None, "limits": config.Limits}
    for key in top:
        if key not in sections and key not in {f.name for f in dataclasses.fields(config.TargetProfile)}:
            log.warning(f"profile table {key!r} is accepted by edgekit.config.parse_profile but not documented "
                        "here: add it to docs/hooks/profile_reference.py")
    scalars = [k for k in top if k not in sections]
    runtime = _probe(f"[runtime]\n{PROBE} = 1\n")
    quantization = _probe(f"[quantization]\n{PROBE} = 1\n")
    augment = _probe(f"[quantization.augment]\n{PROBE} = 1\n")
    validation = _probe(f"[validation]\n{PROBE} = 1\n")
    limits = _probe(f"[limits]\n{PROBE} = 1\n")
    gates = _probe(f"[gates]\n{PROBE} = 1\n")
    output_metrics = _probe(f"[gates.outputs.logits]\n{PROBE} = {{ warn = 1, fail = 1 }}\n")
    task_metrics = _probe(f"[gates.task]\n{PROBE} = {{ warn = 1, fail = 1 }}\n")
    threshold = _probe(f"[gates.task]\naccuracy_drop = {{ warn = 0.1, fail = 0.2, {PROBE} = 1 }}\n")
    example = (targets_dir() / f"{EXAMPLE_PROFILE}.toml").read_text(encoding="utf-8")

    lines = [
        "# Profile keys",
        "",
        "Every key a target profile may set. Generated from `edgekit/config.py` when the docs are built: the keys are "
        "the ones `edgekit.config.parse_profile` accepts, the meanings are the docstrings of the dataclasses that "
        "hold them. A profile with a key not listed here, a value of the wrong type, or a number out of range is "
        "refused when it loads (exit 2, naming the key).",
        "",
        "A key that the profile's backend does not apply is refused too (column *Applied by*; in brackets, the "
        "precisions and values a backend takes). How to write your own profile: "
        "[Targets and profiles](../guides/targets.md).",
        "",
        f"Example: `edgekit profiles show {EXAMPLE_PROFILE}`, the shipped static int8 profile for onnxruntime.",
        "",
        "```toml",
        example.rstrip(),
        "```",
        "",
        "## Top level",
        "",
    ]
    lines += _key_table("", scalars, config.TargetProfile, {}, None)
    lines += ["## [runtime]", "", _markdown(inspect.getdoc(config.RuntimeOptions).split("\n\n")[0]), ""]
    lines += _key_table("runtime", runtime, config.RuntimeOptions, {}, backends)
    lines += ["## [quantization]", "", _markdown(inspect.getdoc(config.QuantRecipe).split("\n\n")[0]) +
              " Keys for int8 and int8-dynamic targets; *Applied by* names the precisions.", ""]
    lines += _key_table("quantization", [k for k in quantization if k != "augment"], config.QuantRecipe, {}, backends)
    lines += ["### [quantization.augment]", "", _markdown(inspect.getdoc(config.Augment).split("\n\n")[0]), ""]
    lines += _key_table("quantization.augment", augment, config.Augment, {}, backends)
    lines += ["## [validation]", ""]
    lines += _key_table("validation", validation, config.TargetProfile, {"samples": "validation_samples"}, None)
    lines += ["## [limits]", "", _markdown(inspect.getdoc(config.Limits).split("\n\n")[0]), ""]
    lines += _key_table("limits", limits, config.Limits, {}, None)
    lines += ["## [gates]", "", _markdown(inspect.getdoc(config.Gates).split("\n\n")[0]), ""]
    lines += _key_table("gates", gates, config.Gates, {}, None)
    lines += ["Each gate is an inline table: " + ", ".join(f"`{k}`" for k in threshold) + ". " +
              _markdown(inspect.getdoc(config.Threshold).split("\n\n")[0]), ""]
    threshold_docs = attribute_docs(config.Threshold)
    for key in threshold:
        if key not in threshold_docs:
            log.warning(f"gate key {key!r} is accepted by edgekit.config.parse_profile but has no documented "
                        "meaning: add it to the Attributes: of Threshold in edgekit/config.py")
    lines += ["| Gate key | Meaning |", "|---|---|"]
    lines += [f"| `{k}` | {threshold_docs.get(k, '**undocumented**')} |" for k in threshold] + [""]
    lines += ["```toml", '[gates.outputs."*"]            # every output', "cosine = { warn = 0.999, fail = 0.99 }",
              "", "[gates.outputs.logits]          # one output, by name",
              "top1_agreement = { warn = 0.995, fail = 0.98 }", "", "[gates.task]",
              "accuracy_drop = { warn = 0.3, fail = 0.5 }", "```", ""]
    lines += ["### Metrics", "", "| Metric | Better | Under `[gates.outputs.NAME]` | Under `[gates.task]` | Meaning |",
              "|---|---|---|---|---|"]
    for metric in sorted(set(output_metrics) | set(task_metrics)):
        meaning = config.METRIC_MEANINGS.get(metric)
        if not meaning:
            log.warning(f"gate metric {metric!r} is accepted by edgekit.config.parse_profile but has no meaning in "
                        "edgekit.config.METRIC_MEANINGS")
        better = "lower" if metric in config.LOWER_IS_BETTER else "higher" if metric in config.HIGHER_IS_BETTER \
            else "?"
        lines.append(f"| `{metric}` | {better} | {'yes' if metric in output_metrics else '-'} | "
                     f"{'yes' if metric in task_metrics else '-'} | {_markdown(meaning or '**undocumented**')} |")
    for metric in sorted(set(config.METRIC_MEANINGS) - set(output_metrics) - set(task_metrics)):
        log.warning(f"edgekit.config.METRIC_MEANINGS documents {metric!r}, which no gate accepts")
    lines += ["", "A NaN or Inf where torch is finite fails every output, whatever its gates.", ""]
    lines += ["## Retired keys", "", "Refused with this reason, so an old profile fails loudly rather than "
              "meaning something else.", "", "| Key | Why |", "|---|---|"]
    lines += [f"| `[runtime] {k}` | {_markdown(why)} |" for k, why in config._RETIRED.items()]
    lines += ["| `[preprocess]` | preprocessing belongs to the model: declare it on the `ModelSpec` or pass "
              "`--preprocess PRESET\\|FILE.toml` |", ""]
    return "\n".join(lines) + "\n"


def _gates(gates: Any) -> str:
    """A profile's gates in one cell: each table, then metric warn / fail."""
    tables = [(f"`{name}`", table) for name, table in gates.outputs.items()] + [("task", gates.task)]
    return "<br>".join(f"{where}: " + ", ".join(f"{metric} {t.warn:g} / {t.fail:g}" for metric, t in table.items())
                       for where, table in tables if table) or "-"


def profiles_page() -> str:
    from edgekit.config import parse_profile
    from edgekit.errors import EdgekitError
    from edgekit.resources import targets_dir

    lines = [
        "# Shipped profiles",
        "",
        "The target profiles edgekit ships (`targets/*.toml` in the repository, inside the wheel too), generated "
        "from the files when the docs are built. `edgekit profiles` lists them with yours; "
        "`edgekit profiles show NAME` prints one to copy and edit. Every key: [Profile keys](profile-keys.md).",
        "",
        "| Profile | Backend | Precision | Device | Description | Gates (warn / fail) |",
        "|---|---|---|---|---|---|",
    ]
    paths = sorted(targets_dir().glob("*.toml"), key=lambda p: p.stem)
    if not paths:
        log.warning(f"no shipped profiles found in {targets_dir()}")
    for path in paths:
        try:
            p = parse_profile(path.read_text(encoding="utf-8"), path.name)
        except EdgekitError as exc:
            log.warning(f"shipped profile {path.name} does not load: {exc}")
            continue
        if p.name != path.stem:
            log.warning(f"shipped profile {path.name} is named {p.name!r}: --target finds it by its file name")
        lines.append(f"| `{p.name}` | {p.backend} | {p.precision} | {_markdown(p.device_label) or '-'} | "
                     f"{_markdown(p.description)} | {_gates(p.gates)} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    for page, render in ((KEYS_PAGE, keys_page), (PROFILES_PAGE, profiles_page)):
        existing = files.get_file_from_path(page)
        if existing is not None:
            log.warning(f"docs/{page} exists but is generated by docs/hooks/profile_reference.py: remove the file")
            files.remove(existing)
        files.append(File.generated(config, page, content=render()))
    return files
