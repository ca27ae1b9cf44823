"""A headless Chromium for the dashboard tests: Debian's package, installed when root."""

import os
import shutil
import subprocess

import pytest
from cdp import Browser, find_chromium


@pytest.fixture(scope="session")
def chromium_binary():
    path = find_chromium()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "chromium"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if res.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                 env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        path = find_chromium()
        if path is None:
            pytest.skip(f"chromium could not be installed: {res.stderr[-400:]}")
    if path is None:
        pytest.skip("no chromium and not root: install Debian's chromium package "
                    "(apt-get install chromium) to run the browser tests")
    return path


@pytest.fixture
def browser(chromium_binary):
    b = Browser(chromium_binary)
    yield b
    b.close()
