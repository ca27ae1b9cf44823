"""The workflow's image step: build (or find) the job image where a runtime exists.

Modes:

* ``auto`` (default): with Apptainer or SingularityCE, build the image (a no-op when it
  is built already). With only the local runtime (debootstrap + bubblewrap), use the
  sandbox when it was built before, and otherwise run on the host and say how to build it
  (a Debian sandbox takes about a minute and 200 MB, too slow to do silently). With no
  runtime at all, run on the host.
* ``build``: build with whatever runtime there is (an error when there is none).
* ``skip``: run on the host.

The result is written as JSON and read back by :func:`exec_prefix`, which gives the
words the training rule puts between ``mpirun -n N`` and the rank's command (the hybrid
model: the host's mpirun starts one container process per rank).

Example:
    >>> info = prepare_image("image.json", mode="skip")
    >>> info["used"], exec_prefix("image.json")
    (False, [])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError, ContainerError

__all__ = ["MODES", "exec_prefix", "prepare_image"]

MODES = ("auto", "build", "skip")


def _write(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)
    return info


def prepare_image(out: str | os.PathLike[str], mode: str = "auto",
                  image: str = "nonsense-hpc", timeout: float = 1200.0) -> dict[str, Any]:
    """Decide on (and if needed build) the job image; write the decision to ``out``.

    Returns:
        ``{"used": bool, "runtime": str|None, "image": str|None, "reason": str}``.

    Raises:
        ConfigError: an unknown mode.
        ContainerError: ``mode="build"`` with no runtime, or a failed build.
    """
    from nonsense_hpc.containers import get_runtime, resolve_sandbox
    from nonsense_hpc.containers.detect import detect_runtime
    from nonsense_hpc.containers.sandbox import read_stamp

    if mode not in MODES:
        raise ConfigError(f"image mode must be one of {', '.join(MODES)}, got {mode!r}")
    path = Path(out)
    if mode == "skip":
        return _write(path, {"used": False, "runtime": None, "image": None,
                             "reason": "image=skip: ranks run on the host"})
    try:
        name = detect_runtime()
    except ContainerError as exc:
        if mode == "build":
            raise
        return _write(path, {"used": False, "runtime": None, "image": None,
                             "reason": f"no container runtime here, ranks run on the host "
                                       f"({exc})"})
    runtime = get_runtime(name)
    if name == "local" and mode == "auto":
        root = resolve_sandbox(image)
        if read_stamp(root) is None:
            return _write(path, {
                "used": False, "runtime": name, "image": None,
                "reason": f"local sandbox {image!r} not built, ranks run on the host "
                          f"(build it once with `nonsense-hpc container build {image}`, "
                          "about a minute, or pass --config image=build)"})
        return _write(path, {"used": True, "runtime": name, "image": str(root),
                             "reason": f"existing local sandbox {root}"})
    built = runtime.build(image, timeout=timeout)
    return _write(path, {"used": True, "runtime": name, "image": str(built),
                         "reason": f"built or reused with {name}"})


def exec_prefix(info_path: str | os.PathLike[str]) -> list[str]:
    """The per-rank command prefix the image step chose (empty: run on the host).

    Raises:
        ConfigError: the file is missing or malformed.
    """
    try:
        info = json.loads(Path(info_path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{info_path} is missing (the image step did not run)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{info_path} is not valid JSON: {exc}") from None
    if not info.get("used"):
        return []
    return ["nonsense-hpc", "container", "exec", "--runtime", str(info["runtime"]),
            str(info["image"]), "--"]
