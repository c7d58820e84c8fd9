"""edgekit: take a PyTorch model to edge runtimes and prove it still works there."""
from edgekit._version import __version__

__all__ = ["__version__", "bench", "export", "validate"]


def export(*args, **kwargs):
    """See :func:`edgekit.api.export`."""
    from edgekit.api import export as _export

    return _export(*args, **kwargs)


def validate(*args, **kwargs):
    """See :func:`edgekit.api.validate_run`."""
    from edgekit.api import validate_run

    return validate_run(*args, **kwargs)


def bench(*args, **kwargs):
    """See :func:`edgekit.bench.run.bench`."""
    from edgekit.bench.run import bench as _bench

    return _bench(*args, **kwargs)
