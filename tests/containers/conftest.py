"""Fixtures for the container tests: the local sandbox image (built once per session) and a
recording `singularity` for the spython path."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _install_tools() -> str | None:
    """Install debootstrap and bubblewrap when missing (as root); a skip reason otherwise."""
    missing = [t for t in ("debootstrap", "bwrap") if shutil.which(t) is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return (f"the local container runtime needs {', '.join(missing)}: "
                "apt-get install -y debootstrap bubblewrap (as root)")
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q",
           "debootstrap", "bubblewrap"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:  # stale package lists on a fresh machine
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"],
                       capture_output=True, timeout=600, check=False)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        return f"apt-get install debootstrap bubblewrap failed: {proc.stderr[-500:]}"
    return None


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """The default local image `nonsense-hpc`, built at most once (cached across runs in
    NONSENSE_SANDBOX_DIR, default ~/.cache/nonsense_hpc/sandboxes)."""
    reason = _install_tools()
    if reason:
        pytest.skip(reason)
    probe = subprocess.run(["bwrap", "--bind", "/", "/", "--dev", "/dev", "true"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"bubblewrap cannot create namespaces here: {probe.stderr.strip()}")
    from nonsense_hpc.containers import LocalRuntime
    from nonsense_hpc.errors import ContainerError

    try:
        return LocalRuntime().build("nonsense-hpc", timeout=900)
    except ContainerError as exc:
        if os.geteuid() != 0:  # a cached sandbox would have been returned above
            pytest.skip(f"no local sandbox and cannot build one: {exc}")
        raise


@pytest.fixture
def fake_singularity(tmp_path, monkeypatch):
    """Put a recording `singularity` first on PATH; returns a function reading its calls
    (without spython's `--version` probes)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "singularity"
    exe.write_text(f"#!{sys.executable}\n" + (HERE / "fake_singularity.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SINGULARITY_LOG", str(log))
    monkeypatch.delenv("MESSAGELEVEL", raising=False)

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        return [["singularity", *r] for r in rows if r != ["--version"]]

    return calls
