"""pytest plugin: the mpirun test matrix for ``mpi_test_*.py`` files.

See :mod:`nonsense_hpc.testing` for how to write such a file. One ``mpirun`` runs all the
selected tests of one file at one rank count (and variant); each item then reports its own
outcome, naming the test, the rank count and the ranks that failed.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nonsense_hpc.launch import mpi_environment, mpirun_command
from nonsense_hpc.testing.mpirunner import C_GUARD_GRACE

__all__ = ["DEFAULT_NP", "MpiFile", "MpiItem"]

DEFAULT_NP = (1, 2, 3, 4, 5, 8)
DEFAULT_TIMEOUT = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mpi", "mpirun test matrix (nonsense_hpc)")
    group.addoption("--mpi-np", default="",
                    help="comma-separated rank counts to run instead of each file's NP")
    group.addoption("--mpi-timeout-scale", type=float, default=1.0,
                    help="multiply every MPI test's hang-guard timeout (slow machines)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mpi: runs under mpirun at several rank counts")


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector
                                ) -> pytest.Collector | None:
    """Keep pytest's Python collector off ``mpi_test_*.py`` named on the command line.

    Their tests need ``comm`` and run only under mpirun (:class:`MpiFile` collects them).
    """
    if module_path.name.startswith("mpi_test_"):
        return _NotAModule.from_parent(parent, path=module_path)
    return None


class _NotAModule(pytest.File):
    """What pytest's Python collector gets for an ``mpi_test_*.py`` file: nothing."""

    def collect(self) -> Iterator[pytest.Item]:
        """No items: :class:`MpiFile` collects this file."""
        return iter(())


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".py" and file_path.name.startswith("mpi_test_"):
        return MpiFile.from_parent(parent, path=file_path)
    return None


def _literal(tree: ast.Module, name: str, default: Any) -> Any:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    return ast.literal_eval(node.value)
    return default


@dataclass
class _Run:
    """One mpirun of one file at one rank count; shared by that group's items."""

    path: Path
    np: int
    variant: str
    env: dict[str, str]
    args: tuple[str, ...]
    timeout: float
    tests: list[str] = field(default_factory=list)
    results: dict[str, list[dict[str, Any]]] | None = None
    started: dict[str, list[int]] = field(default_factory=dict)
    output: str = ""
    returncode: int | None = None
    timed_out: bool = False

    def execute(self) -> None:
        with tempfile.TemporaryDirectory(prefix="mpirun-report-") as tmp:
            prefix = os.path.join(tmp, "report")
            argv = [sys.executable, "-m", "nonsense_hpc.testing.mpirunner", str(self.path),
                    "--report", prefix, "--timeout", str(self.timeout),
                    "--only", ",".join(self.tests)]
            cmd = mpirun_command(self.np, argv, extra=self.args)
            env = mpi_environment(allow_root=True)
            env.update(self.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            # Hard limit for the whole job: every test's guard, plus start-up slack.
            limit = (self.timeout + C_GUARD_GRACE) * max(1, len(self.tests)) + 60
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, text=True, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            self.output, self.returncode = out or "", proc.returncode
            self.results = {}
            for rank in range(self.np):
                report = Path(f"{prefix}.rank{rank}")
                if not report.exists():
                    continue
                for line in report.read_text(encoding="utf-8").splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    rec["rank"] = rank
                    if rec.get("outcome") == "started":
                        self.started.setdefault(rec["test"], []).append(rank)
                    else:
                        self.results.setdefault(rec["test"], []).append(rec)


class MpiTestFailure(Exception):
    """Raised by an item whose test failed on some rank."""


class MpiFile(pytest.File):
    """A ``mpi_test_*.py`` file: items for each (variant, np, test)."""

    def collect(self) -> Iterator[pytest.Item]:
        """Read the file's tests and matrix constants without importing it."""
        source = self.path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(self.path))
        tests = [n.name for n in tree.body
                 if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        nps = tuple(_literal(tree, "NP", DEFAULT_NP))
        test_np: dict[str, tuple[int, ...]] = _literal(tree, "TEST_NP", {})
        variants: dict[str, dict[str, str]] = {"": {}}
        variants.update(_literal(tree, "VARIANTS", {}))
        variant_np: dict[str, tuple[int, ...]] = _literal(tree, "VARIANT_NP", {})
        timeout = float(_literal(tree, "TIMEOUT", DEFAULT_TIMEOUT))
        timeout *= float(self.config.getoption("--mpi-timeout-scale"))
        extra = tuple(_literal(tree, "MPIRUN_ARGS", ()))
        forced = self.config.getoption("--mpi-np")
        if forced:
            nps = tuple(int(x) for x in forced.split(","))
        runs: dict[tuple[str, int], _Run] = {}
        for variant, env in variants.items():
            for np in sorted(set(nps) | {n for t in tests for n in test_np.get(t, ())}):
                if variant and variant in variant_np and np not in variant_np[variant] \
                        and not forced:
                    continue
                for test in tests:
                    wanted = test_np.get(test, nps)
                    if forced:
                        wanted = nps
                    if np not in wanted:
                        continue
                    key = (variant, np)
                    if key not in runs:
                        runs[key] = _Run(self.path, np, variant, dict(env), extra, timeout)
                    label = f"np={np}" + (f"-{variant}" if variant else "")
                    yield MpiItem.from_parent(self, name=f"{test}[{label}]", test=test,
                                              run=runs[key])


class MpiItem(pytest.Item):
    """One test function at one rank count."""

    def __init__(self, *, test: str, run: _Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test, self.run = test, run
        self.add_marker(pytest.mark.mpi)

    def runtest(self) -> None:
        """Run this item's group under mpirun once, then report this test's outcome."""
        run = self.run
        if run.results is None:
            selected = [i.test for i in self.session.items
                        if isinstance(i, MpiItem) and i.run is run]
            run.tests = list(dict.fromkeys(selected))
            run.execute()
        assert run.results is not None
        records = run.results.get(self.test, [])
        where = f"{self.test} at np={run.np}" + (f" ({run.variant})" if run.variant else "")
        bad = [r for r in records if r["outcome"] in ("failed", "timeout")]
        if bad:
            ranks = sorted(r["rank"] for r in bad)
            first = bad[0]
            raise MpiTestFailure(f"{where}: {first['outcome']} on rank(s) {ranks}\n"
                                 f"--- rank {first['rank']} ---\n{first['detail']}")
        if len(records) < run.np:
            missing = sorted(set(range(run.np)) - {r["rank"] for r in records})
            why = "the job hit its hard time limit" if run.timed_out else \
                f"mpirun exited with status {run.returncode}"
            stuck = sorted(set(missing) & set(run.started.get(self.test, [])))
            if stuck:
                cause = (f"rank(s) {stuck} started this test and never finished it: it hung "
                         "or died inside the test (stacks, if printed, are below)")
            else:
                cause = "an earlier test may have hung or killed a rank"
            tail = "\n".join(run.output.splitlines()[-60:])
            raise MpiTestFailure(f"{where}: no result from rank(s) {missing}: {why}; "
                                 f"{cause}\n--- mpirun output (tail) ---\n{tail}")
        skipped = [r for r in records if r["outcome"] == "skipped"]
        if skipped:
            pytest.skip(f"{where}: {skipped[0]['detail']}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        """Show the per-rank report rather than a traceback into the plugin."""
        if isinstance(excinfo.value, MpiTestFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location shown in pytest's report."""
        return self.path, None, f"{self.path.name}::{self.name}"
