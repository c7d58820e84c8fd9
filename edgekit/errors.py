"""The one error type users see: a clear one-line message and exit code 2 from the CLI."""
import re

# ANSI colour / cursor sequences (torch.onnx colours its messages) and other control characters: they make
# junit.xml invalid XML and litter report.md
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


class EdgekitError(Exception):
    """Bad input or a failed stage, said in one line for the user."""


def clean(text: str) -> str:
    """``text`` without control characters (tabs become spaces)."""
    return _CONTROL.sub("", text.replace("\t", " "))


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The informative line of an exception: native runtimes lead with 'Exception from src/...' lines."""
    if isinstance(exc, EdgekitError):
        return clean(str(exc))
    lines = [line.strip() for line in clean(str(exc)).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from src/", "Check '"))]
    text = (useful or lines or [""])[0]
    return f"{type(exc).__name__}: {text}"[:limit]
