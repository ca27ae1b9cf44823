"""``nonsense-hpc run``: the main job, the Snakemake workflow run with a profile.

The workflow lives in the repository's ``workflows/Snakefile``; :func:`find_workflow`
finds it next to the installed package (an editable install or a checkout), in the
current directory, or where ``NONSENSE_WORKFLOW`` points. :func:`snakemake_command`
builds the command line; :func:`run_workflow` runs it with this environment's ``bin``
first on ``PATH`` (so the rules find this ``nonsense-hpc``, ``python`` and ``mpirun``)
and reports where the report is, or which rule failed.

Example:
    >>> cmd = snakemake_command("out", np=2, steps=100)          # doctest: +SKIP
    >>> cmd[:3]                                                   # doctest: +SKIP
    ['/venv/bin/python', '-m', 'snakemake']
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["RunOutcome", "find_workflow", "profile_path", "run_workflow",
           "snakemake_command"]

_FAILED_RULE = re.compile(r"Error in rule (\w+):")


def find_workflow(environ: Mapping[str, str] | None = None) -> Path:
    """The main job's Snakefile.

    Order: ``NONSENSE_WORKFLOW`` (a Snakefile or a directory holding one); the
    ``workflows/`` directory next to the package's source tree (a checkout, or an
    editable install); ``./workflows``; the copy a wheel install puts in
    ``<prefix>/share/nonsense-hpc/workflows`` (the environment's prefix, or the one the
    package was installed under with ``--prefix``/``--user``).

    Raises:
        ConfigError: none found (the message says where it looked).
    """
    env = os.environ if environ is None else environ
    candidates: list[Path] = []
    named = env.get("NONSENSE_WORKFLOW")
    if named:
        p = Path(named).expanduser()
        candidates.append(p / "Snakefile" if p.is_dir() else p)
    import nonsense_hpc

    candidates.append(Path(nonsense_hpc.__file__).resolve().parents[1] / "workflows"
                      / "Snakefile")
    candidates.append(Path.cwd() / "workflows" / "Snakefile")
    for prefix in _install_prefixes(Path(nonsense_hpc.__file__).resolve()):
        candidates.append(prefix / "share" / "nonsense-hpc" / "workflows" / "Snakefile")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"the main job's workflow was not found (looked at {looked}); run "
                      "from a checkout of nonsense_hpc (pip install -e '.[workflow]') or set "
                      "NONSENSE_WORKFLOW to workflows/Snakefile")


def _install_prefixes(package_init: Path) -> list[Path]:
    """Prefixes a wheel install may have put ``share/nonsense-hpc`` under."""
    import site

    found: list[Path] = []
    # <prefix>/lib/pythonX.Y/site-packages/nonsense_hpc/__init__.py -> <prefix>
    if len(package_init.parents) > 4 and package_init.parents[1].name in (
            "site-packages", "dist-packages"):
        found.append(package_init.parents[4])
    found += [Path(sys.prefix), Path(site.getuserbase())]
    return list(dict.fromkeys(found))


def profile_path(snakefile: Path, name: str = "local") -> Path:
    """A profile directory: ``workflows/profiles/NAME``, else the repository's ``NAME``.

    Raises:
        ConfigError: no such profile.
    """
    for p in (snakefile.parent / "profiles" / name, snakefile.parent.parent / name,
              Path(name)):
        if (p / "config.yaml").is_file():
            return p.resolve()
    raise ConfigError(f"no Snakemake profile {name!r} (looked for "
                      f"{snakefile.parent / 'profiles' / name}/config.yaml and "
                      f"{snakefile.parent.parent / name}/config.yaml)")


def snakemake_command(out: str | os.PathLike[str], *, np: int = 2, steps: int = 200,
                      profile: str = "local", config: Mapping[str, Any] | None = None,
                      extra: Sequence[str] = (), snakefile: Path | None = None) -> list[str]:
    """The ``snakemake`` command line that runs the main job into ``out``.

    Raises:
        ConfigError: np or steps < 1, snakemake not installed, workflow not found.
    """
    if np < 1 or steps < 1:
        raise ConfigError(f"np and steps must be >= 1, got np={np}, steps={steps}")
    try:
        import snakemake  # noqa: F401
    except ImportError:
        raise ConfigError("the main job needs Snakemake: pip install "
                          "'nonsense-hpc[workflow]'") from None
    sf = snakefile or find_workflow()
    prof = profile_path(sf, profile)
    values = {"np": np, "steps": steps, **(config or {})}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(sf), "--profile",
           str(prof), "--directory", str(Path(out).absolute()), "--config"]
    cmd += [f"{k}={v}" for k, v in values.items()]
    cmd += list(extra)
    return cmd


@dataclass
class RunOutcome:
    """How a workflow run ended."""

    returncode: int
    out: Path
    report: Path
    failed_rules: list[str]

    @property
    def ok(self) -> bool:
        """Whether the workflow finished and wrote its report."""
        return self.returncode == 0 and self.report.is_file()


def job_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the workflow: this environment's ``bin`` first on PATH."""
    env = dict(os.environ if environ is None else environ)
    bindir = os.path.dirname(sys.executable)
    if not env.get("PATH", "").startswith(bindir + os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def run_workflow(cmd: Sequence[str], out: str | os.PathLike[str], *,
                 timeout: float | None = None) -> RunOutcome:
    """Run ``cmd`` (from :func:`snakemake_command`), echoing its output as it comes.

    The output is also kept in ``OUT/snakemake.log``; the names of failed rules are
    picked out of it.
    """
    out_dir = Path(out).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "snakemake.log"
    failed: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=job_environment(), bufsize=1)
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
            raise RuntimeError("no output pipe from snakemake")
        try:
            for line in proc.stdout:
                sys.stderr.write(line)
                log.write(line)
                m = _FAILED_RULE.search(line)
                if m and m.group(1) not in failed:
                    failed.append(m.group(1))
            code = proc.wait(timeout)
        except BaseException:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return RunOutcome(code, out_dir, out_dir / "report" / "report.html", failed)
