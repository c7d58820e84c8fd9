"""The one error type users see: a clear one-line message and exit code 2 from the CLI."""


class EdgekitError(Exception):
    """Bad input or a failed stage, said in one line for the user."""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The informative line of an exception: native runtimes lead with 'Exception from src/...' lines."""
    if isinstance(exc, EdgekitError):
        return str(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from src/", "Check '"))]
    text = (useful or lines or [""])[0]
    return f"{type(exc).__name__}: {text}"[:limit]
