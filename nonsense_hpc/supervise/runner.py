"""Run ``module:function`` as a child process: ``python -m nonsense_hpc.supervise.runner``.

Config files name Python callables this way (``callable = "pkg.mod:main"``); the
function is called with the remaining command-line arguments as strings, and its int
return value (or ``SystemExit`` code) is the exit status.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["main", "resolve"]


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (dotted attributes allowed after the colon).

    Raises:
        ConfigError: malformed name, missing module or attribute, or not callable.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"callable must look like 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``runner TARGET [ARGS...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m nonsense_hpc.supervise.runner module:function [args...]",
              file=sys.stderr)
        return 2
    result = resolve(args[0])(*args[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
