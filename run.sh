#!/usr/bin/env bash
# One command from a fresh checkout: set up .venv, then start the web app (extra flags go to app.py).
# The install is the GPU one where an NVIDIA driver is present, else the lean CPU one; LIPSYNC_INSTALL=cpu or gpu
# chooses (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
