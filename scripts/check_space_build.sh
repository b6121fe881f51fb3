#!/usr/bin/env bash
# Would the Space build? For each Python that ZeroGPU offers (3.10, 3.12) found here: a fresh virtualenv,
# `pip install -r requirements.txt` as Spaces run it, then the page built with SPACES_ZERO_GPU set and the
# stand-in `spaces` module of tests/support/stand_ins (the real one needs the Spaces infrastructure).
# Usage: bash scripts/check_space_build.sh [python ...]   (default: python3.10 and python3.12, or pyenv's)
set -euo pipefail
cd "$(dirname "$0")/.."
pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
  for v in 3.10 3.12; do
    for candidate in "python$v" "$HOME/.pyenv/versions/$v"*/bin/python; do
      if "$candidate" -c pass >/dev/null 2>&1; then pythons+=("$candidate"); break; fi  # (pyenv shims may fail)
    done
  done
fi
[ ${#pythons[@]} -gt 0 ] || { echo "No Python 3.10 or 3.12 found."; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for py in "${pythons[@]}"; do
  version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "== Python $version ($py)"
  "$py" -m venv "$work/venv-$version"
  start=$(date +%s)
  "$work/venv-$version/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  echo "   installed in $(( $(date +%s) - start )) s; torch $("$work/venv-$version/bin/python" -c 'import torch; print(torch.__version__)')"
  if SPACES_ZERO_GPU=true HF_HUB_OFFLINE=1 PYTHONPATH="tests/support/stand_ins:." GRADIO_ANALYTICS_ENABLED=False \
      "$work/venv-$version/bin/python" -W error::DeprecationWarning:gradio -c \
      "from webapp import AppConfig, WebApp; c = AppConfig.from_environment(); demo = WebApp(c).build(); assert c.zero_gpu; print('   page built:', len(demo.fns), 'events')"; then
    echo "   ok"
  else
    echo "   FAILED"; status=1
  fi
done
exit $status
