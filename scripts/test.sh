#!/usr/bin/env bash
# README command (b): install the test dependencies and run every test, ruff and mypy.
# Works on a fresh Debian 12 with Python 3.11. As root it also installs the Debian packages
# the real-component tests need (Slurm + munge, debootstrap + bubblewrap, chromium); as
# another user those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== pytest"; python -m pytest "$@"
