#!/usr/bin/env bash
# One command from a fresh checkout: set up .venv, then start the web app (extra flags go to app.py).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
