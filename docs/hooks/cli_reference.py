"""mkdocs hook: the command-line reference (reference/cli.md), rendered from ``edgekit.cli.build_parser()`` at
build time, so it cannot drift from the parser. ``build_parser()`` imports no runtime, so the docs need none.

After vllm's docs/mkdocs/hooks/generate_argparse.py."""
from __future__ import annotations

import argparse
import logging

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.cli_reference")

PAGE = "reference/cli.md"
WIDTH = 100  # usage lines are wrapped at this width whatever the terminal


def _cell(text: str) -> str:
    """Text for one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    value = ""
    if action.nargs != 0:
        metavar = action.metavar or action.dest.upper()
        value = f" {metavar}" + (" ..." if action.nargs in ("+", "*") else "")
    return ", ".join(f"`{flag}{value}`" for flag in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.required or not action.option_strings and action.nargs not in ("?", "*"):
        return "required"
    if isinstance(action, argparse.BooleanOptionalAction):
        return "on" if action.default else "off"
    if action.default in (None, argparse.SUPPRESS):
        return "-"
    if action.nargs == 0:  # store_true and friends: a flag
        return "on" if action.default else "off"
    if isinstance(action.default, (list, tuple)):
        return "`" + " ".join(map(str, action.default)) + "`"
    return f"`{action.default}`"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        which = "Any of" if action.nargs in ("+", "*") else "One of"
        text = f"{text.rstrip('.')}. {which}: {', '.join(f'`{c}`' for c in action.choices)}".lstrip(". ")
    return _cell(text)


def _usage(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH)
    usage = parser.format_usage().removeprefix("usage: ").strip()
    return usage.replace("\n" + " " * len("usage: "), "\n")  # continuation lines lose the prefix's indent


def _command(parser: argparse.ArgumentParser, name: str, summary: str, level: int) -> list[str]:
    lines = [f"{'#' * level} {name}", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
    lines += ["```", _usage(parser), "```", ""]
    actions = [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    if actions:
        lines += ["| Argument | Default | Meaning |", "|---|---|---|"]
        lines += [f"| {_names(a)} | {_default(a)} | {_help(parser, a)} |" for a in actions]
        lines.append("")
    sub = _subparsers(parser)
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        for child, child_parser in sub.choices.items():
            lines += _command(child_parser, f"{name} {child}", helps.get(child, ""), level + 1)
    return lines


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every subcommand of ``parser``, nested ones as "profiles show"."""
    sub = _subparsers(parser)
    if sub is None:
        return []
    found = []
    for name, child in sub.choices.items():
        found.append(f"{prefix}{name}")
        found += commands(child, f"{prefix}{name} ")
    return found


def render() -> str:
    from edgekit.cli import __doc__ as cli_doc
    from edgekit.cli import build_parser

    parser = build_parser()
    sub = _subparsers(parser)
    if sub is None:
        log.warning("edgekit.cli.build_parser() has no subcommands: the CLI reference is empty")
        return "# Command line\n"
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    lines = [
        "# Command line",
        "",
        "Generated from `edgekit.cli.build_parser()` when the docs are built: `edgekit COMMAND --help` prints the "
        "same. Each section heading is the command as you type it.",
        "",
        " ".join(cli_doc.split("\n", 1)[1].split()) if "\n" in (cli_doc or "") else "",
        "",
        "| Command | What it does |",
        "|---|---|",
    ]
    for name in sub.choices:
        anchor = f"edgekit-{name}"
        lines.append(f"| [`edgekit {name}`](#{anchor}) | {_cell(helps.get(name, ''))} |")
    lines.append("")
    lines += _command(parser, "edgekit", parser.description or "", 2)
    return "\n".join(lines) + "\n"


def on_files(files, config):
    existing = files.get_file_from_path(PAGE)
    if existing is not None:
        log.warning(f"docs/{PAGE} exists but is generated by docs/hooks/cli_reference.py: remove the file")
        files.remove(existing)
    files.append(File.generated(config, PAGE, content=render()))
    return files
