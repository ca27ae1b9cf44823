#!/usr/bin/env bash
# Create .venv and install nonsense-hpc into it, on a fresh Debian 12 with Python 3.11.
# Usage: bash scripts/setup.sh [EXTRAS]   (EXTRAS: workflow (default) or test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-workflow}
PY=${PYTHON:-python3}
if ! "$PY" -c "import venv, ensurepip" 2>/dev/null; then
    # Debian ships venv/ensurepip separately.
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv
    fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt pins torch to the CPU build 2.13.0 (any other spec pulls GBs of CUDA).
.venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]"
echo "installed nonsense-hpc into .venv (extras: $extras); try: .venv/bin/nonsense-hpc doctor"
