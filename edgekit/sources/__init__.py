"""Named model sources: ``SCHEME:NAME`` for the schemes registered here (``zoo:cnn``, ``hf:./my-bert``).

A scheme is the text before the first ``:``, at least two characters long (so ``C:\\model.py:build`` is no
scheme, as in timm's ``parse_model_name``) and registered below; anything else stays a ``FILE.py:FACTORY``,
``package.module:FACTORY`` or ``.pt2`` source. Each entry names its loader as ``module:function`` and is imported
only when used, so ``edgekit --help`` never imports transformers. A loader takes the text after the scheme and
returns a :class:`~edgekit.spec.ModelSpec`; edgekit.source completes and checks it as it does any factory's.
Adding a scheme is one module in this package and one line here.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from edgekit.errors import EdgekitError
from edgekit.spec import ModelSpec

Loader = Callable[[str], ModelSpec]

SCHEMES: dict[str, str] = {
    "zoo": "edgekit.zoo:load",
    "hf": "edgekit.sources.hf:load",
    "timm": "edgekit.sources.timm_models:load",
    "torchvision": "edgekit.sources.torchvision_models:load",
}


def parse(source: str) -> tuple[str, str] | None:
    """``hf:./bert`` -> ("hf", "./bert"); None when ``source`` names no registered scheme."""
    scheme, sep, name = source.partition(":")
    if sep and len(scheme) >= 2 and scheme in SCHEMES:
        return scheme, name
    return None


def loader(scheme: str) -> Loader:
    module, _, function = SCHEMES[scheme].partition(":")
    return getattr(importlib.import_module(module), function)


def split_options(scheme: str, rest: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """("torchvision", "mobilenet_v2?weights=w.pth") -> ("mobilenet_v2", {"weights": "w.pth"}); an empty name or
    an unknown key is a one-line error."""
    name, _, query = rest.partition("?")
    options = dict(item.partition("=")[::2] for item in query.split("&") if item)
    unknown = sorted(set(options) - set(allowed))
    if unknown or not name:
        raise EdgekitError(f"{scheme}:{rest}: give {scheme}:NAME" + "".join(f"[?{k}=...]" for k in allowed)
                           + (f" (unknown option {unknown[0]!r})" if unknown else ""))
    return name, options
