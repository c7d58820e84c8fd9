"""The one error type users see: a clear one-line message and exit code 2 from the CLI."""


class EdgekitError(Exception):
    """Bad input or a failed stage, said in one line for the user."""
