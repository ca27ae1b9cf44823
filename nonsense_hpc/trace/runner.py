"""Run a command with tracing on, then merge and render the per-process files.

This is what ``nonsense-hpc trace -- CMD ...`` does; it is a plain function so tests
and workflows can call it.

Example:
    >>> from nonsense_hpc.trace.runner import run_traced          # doctest: +SKIP
    >>> res = run_traced(["mpirun", "-n", "4", "python", "step.py"], "trace-out")
    >>> res.files["html"]                                          # doctest: +SKIP
    PosixPath('trace-out/trace.html')
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.trace.hook import TRACE_FILE_VAR, write_sitecustomize
from nonsense_hpc.trace.model import Trace

__all__ = ["TracedRun", "run_traced", "traced_environment"]


@dataclass
class TracedRun:
    """Outcome of :func:`run_traced`.

    Attributes:
        returncode: the command's exit status (124 when it ran past the timeout).
        trace: the merged events of every process.
        files: the rendered files by key (empty when nothing was recorded).
        raw: the per-process JSON-lines files.
    """

    returncode: int
    trace: Trace
    files: dict[str, Path] = field(default_factory=dict)
    raw: list[Path] = field(default_factory=list)


def traced_environment(raw_dir: str | Path, hook_dir: str | Path,
                       base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a traced command: tracing on, files in ``raw_dir``."""
    env = dict(os.environ if base is None else base)
    env["NONSENSE_TRACE"] = "1"
    env[TRACE_FILE_VAR] = str(Path(raw_dir).resolve()) + os.sep
    write_sitecustomize(hook_dir)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(Path(hook_dir).resolve()) + (os.pathsep + path if path else "")
    return env


def run_traced(argv: list[str], out: str | Path, *, timeout: float | None = None,
               title: str | None = None, max_items: int = 400) -> TracedRun:
    """Run ``argv`` with ``NONSENSE_TRACE=1`` and render what its processes recorded.

    Args:
        argv: the command (e.g. ``["mpirun", "-n", "4", "python", "train.py"]``).
        out: directory for ``trace.html``, ``trace.svg``, ``trace.mmd``, ``trace.json``,
            ``events.jsonl`` and the per-process files under ``raw/``.
        timeout: seconds before the command's process group is killed (None: no limit).
        title: title of the diagrams (default: the command line).
        max_items: rows of the diagrams.

    Returns:
        A :class:`TracedRun`; files are rendered even when the command failed, as far
        as events were written.

    Raises:
        ConfigError: empty command, or the program cannot be started.
    """
    from nonsense_hpc.trace import render
    from nonsense_hpc.trace.collect import files_of

    if not argv:
        raise ConfigError("nothing to run: give a command after --, e.g. "
                          "nonsense-hpc trace -- mpirun -n 4 python train.py")
    outdir = Path(out)
    raw = outdir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in raw.glob("*.jsonl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="nonsense-trace-") as hook_dir:
        env = traced_environment(raw, hook_dir)
        try:
            proc = subprocess.Popen(argv, env=env, start_new_session=True)
        except OSError as exc:
            raise ConfigError(f"cannot run {argv[0]!r}: {exc}") from None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = 124
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait()
    files = files_of([raw])
    trace = Trace.load(files)
    rendered = {}
    if len(trace):
        rendered = render(trace, outdir, title=title or "trace: " + " ".join(argv),
                          max_items=max_items)
    return TracedRun(code, trace, rendered, files)
