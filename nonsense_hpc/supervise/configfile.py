"""Supervision trees from a TOML or YAML file (``nonsense-hpc supervise FILE``).

The file has an optional ``[supervisor]`` table (the :class:`SupervisorSpec` flags) and
a list ``children``; each child says *what* to run with exactly one of these keys:

``command``     argv list (or a string, split like a shell would)
``callable``    ``"package.module:function"``, run as ``python -m
                nonsense_hpc.supervise.runner``; ``args`` are its string arguments
``forwarder``, ``streamer``, ``broker``
                a ZeroMQ device from nonsense_hpc.devices, run as ``nonsense-hpc
                <device>`` with the table's keys as options (``in = "tcp://*:5559"``
                becomes ``--in tcp://*:5559``; ``true`` becomes a bare flag)
``supervisor``  a nested supervisor: a table with the same keys as the file
                (its own flags plus ``children``)

and optionally ``mpi = { np = 2 }`` to run the command under ``mpirun -n 2``. The other
keys are those of :class:`ChildSpec`: ``restart``, ``shutdown``, ``type``, ``args``,
``env``, ``cwd``, ``stdout``, ``stderr``, ``heartbeat``, ``heartbeat_timeout``,
``new_session``. Relative ``cwd``/``stdout``/``stderr`` paths are relative to the file.

Example (TOML)::

    [supervisor]
    name = "services"
    strategy = "rest_for_one"
    intensity = 3
    period = 10
    events = "tcp://127.0.0.1:5600"
    control = "ipc:///tmp/services.ctl"

    [[children]]
    id = "forwarder"
    forwarder = { in = "tcp://127.0.0.1:5559", out = "tcp://127.0.0.1:5560" }

    [[children]]
    id = "web"
    command = "python3 -m http.server 8000"
    shutdown = 2.0
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.supervise.spec import ChildSpec, SupervisorSpec

__all__ = ["DEVICES", "load_config", "parse_config"]

DEVICES = ("forwarder", "streamer", "broker")
_FLAGS = ("name", "strategy", "intensity", "period", "events", "control")
_STARTS = ("command", "callable", "supervisor", *DEVICES)
_CHILD_KEYS = ("id", "restart", "shutdown", "type", "args", "env", "cwd", "stdout",
               "stderr", "heartbeat", "heartbeat_timeout", "new_session", "mpi")


def load_config(path: str | os.PathLike[str]) -> SupervisorSpec:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` file into a :class:`SupervisorSpec`.

    Raises:
        ConfigError: the file is missing, does not parse, or describes an invalid tree
            (the message names the file and the offending child or key).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read supervisor config {file}: {exc}") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{file}: unknown config format {suffix!r} "
                              "(use .toml, .yaml or .yml)")
    except ConfigError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise ConfigError(f"{file}: does not parse: {exc}") from None
    try:
        return parse_config(data, base=file.parent)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def _check_keys(where: str, table: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: "
                          f"{', '.join(valid)}")


def parse_config(data: Any, base: Path | None = None, where: str = "config") -> SupervisorSpec:
    """Turn parsed TOML/YAML data into a :class:`SupervisorSpec`.

    Args:
        data: a mapping with an optional ``supervisor`` table and a ``children`` list.
        base: directory that relative paths are resolved against (default: cwd).
        where: position named in error messages.

    Raises:
        ConfigError: anything invalid, with the position named.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table with 'supervisor' and 'children'")
    _check_keys(where, data, ("supervisor", "children", *_FLAGS))
    flags = dict(data.get("supervisor") or {})
    _check_keys(f"{where}.supervisor", flags, _FLAGS)
    for key in _FLAGS:
        if key in data:
            flags[key] = data[key]
    children = data.get("children")
    if not isinstance(children, list) or not children:
        raise ConfigError(f"{where}: 'children' must be a non-empty list of tables")
    specs = tuple(_child(c, base or Path.cwd(), f"{where}.children[{i}]")
                  for i, c in enumerate(children))
    try:
        return SupervisorSpec(children=specs, **flags)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _device_argv(device: str, options: Any, where: str) -> list[str]:
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.{device}: expected a table of options, e.g. "
                          f"{{ in = \"tcp://*:5559\", out = \"tcp://*:5560\" }}")
    argv = [sys.executable, "-m", "nonsense_hpc", device]
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                argv.extend([flag, str(item)])
        else:
            argv.extend([flag, str(value)])
    return argv


def _path(value: Any, base: Path, where: str) -> str | None:
    if value is None or value == "stdout":
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a path string, got {value!r}")
    return str(base / value)


def _child(table: Any, base: Path, where: str) -> ChildSpec:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    _check_keys(where, table, (*_CHILD_KEYS, *_STARTS))
    if "id" not in table:
        raise ConfigError(f"{where}: every child needs an 'id'")
    where = f"{where} ({table['id']!r})"
    starts = [k for k in _STARTS if k in table]
    if len(starts) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(_STARTS)} "
                          f"(got {', '.join(starts) or 'none'})")
    kind = starts[0]
    value = table[kind]
    args = table.get("args", [])
    if not isinstance(args, list):
        raise ConfigError(f"{where}: args must be a list")
    start: Any
    if kind == "command":
        start = shlex.split(value) if isinstance(value, str) else value
        if not isinstance(start, list) or not start:
            raise ConfigError(f"{where}: command must be a non-empty list or string")
        start = [str(a) for a in start]
    elif kind == "callable":
        if not isinstance(value, str) or ":" not in value:
            raise ConfigError(f"{where}: callable must be 'package.module:function'")
        start = [sys.executable, "-m", "nonsense_hpc.supervise.runner", value]
    elif kind == "supervisor":
        start = parse_config(value, base, f"{where}.supervisor")
        if start.name == "supervisor":
            start = dataclasses.replace(start, name=str(table["id"]))
    else:
        start = _device_argv(kind, value, where)
    mpi = table.get("mpi")
    if mpi is not None:
        start = _wrap_mpi(start, mpi, where)
    fields = {k: table[k] for k in _CHILD_KEYS if k in table and k not in ("mpi",)}
    fields["args"] = tuple(args)
    for key in ("cwd", "stdout", "stderr"):
        if key in fields:
            fields[key] = _path(fields[key], base, f"{where}.{key}")
    env = fields.get("env", {})
    if not isinstance(env, Mapping):
        raise ConfigError(f"{where}: env must be a table of strings")
    fields["env"] = {str(k): str(v) for k, v in env.items()}
    if mpi is not None:
        # mpirun puts every rank in a process group of its own: kill the whole session.
        fields.setdefault("new_session", True)
    if "type" not in fields and kind == "supervisor":
        fields["type"] = "supervisor"
    try:
        return ChildSpec(start=start, **fields)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _wrap_mpi(start: Any, mpi: Any, where: str) -> list[str]:
    from nonsense_hpc.launch import mpirun_command

    if not isinstance(start, list):
        raise ConfigError(f"{where}: mpi works with a command, callable or device child")
    if not isinstance(mpi, Mapping) or not isinstance(mpi.get("np"), int):
        raise ConfigError(f"{where}: mpi must be a table like {{ np = 2 }}")
    _check_keys(f"{where}.mpi", mpi, ("np", "oversubscribe", "extra"))
    extra = mpi.get("extra", [])
    if not isinstance(extra, list):
        raise ConfigError(f"{where}.mpi.extra must be a list of launcher options")
    return mpirun_command(int(mpi["np"]), start, oversubscribe=bool(mpi.get("oversubscribe",
                                                                               True)),
                          extra=[str(e) for e in extra])
