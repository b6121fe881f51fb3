#!/usr/bin/env bash
# What an install costs, measured as a new user gets it: a fresh virtualenv, PyPI alone (this machine's pip
# configuration, local indexes and pip cache left out), then the first job.
#
# Usage: bash bench/fresh_install.sh NAME REQUIREMENTS CHECKPOINT FACE AUDIO
#   NAME          a label; the venv is made in $WORK/venv-NAME (WORK defaults to /tmp/lipsync-fresh)
#   REQUIREMENTS  requirements-cpu.txt (the CPU install) or requirements.txt (the GPU/Spaces install)
#   CHECKPOINT    a Wav2Lip checkpoint (a random-weight one does: tests/media.py make_checkpoint)
#   FACE, AUDIO   a short clip and its speech
# Prints: download (the wheels `pip download` fetches, summed), install time, installed size, time to the first
# job's MP4 from the end of the install (cold model and face-box caches), and time to the app's first page.
set -euo pipefail
name=$1 req=$2 checkpoint=$3 face=$4 audio=$5
cd "$(dirname "$0")/.."
work=${WORK:-/tmp/lipsync-fresh}
venv=$work/venv-$name
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1  # PyPI alone, as on a user's machine
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT
rm -rf "$venv" "$work/download-$name" "$work/cache-$name"
mkdir -p "$work"
now() { date +%s.%N; }
seconds() { python3 -c "print(f'{$2 - $1:.1f}')"; }

python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip
start=$(now)
"$venv/bin/python" -m pip install -q --no-cache-dir -r "$req"
installed=$(now)
echo "install: $(seconds "$start" "$installed") s; installed size: $(du -sh "$venv" | cut -f1) ($(du -sm "$venv" | cut -f1) MiB)"

# The first job, on a cold cache: the CLI from the end of the install to the MP4 written.
export HF_HUB_OFFLINE=1 LIPSYNC_MODEL_CACHE=$work/cache-$name/models LIPSYNC_CACHE_DIR=$work/cache-$name/boxes \
       LIPSYNC_WEIGHTS_DIR=$work/cache-$name/weights GRADIO_ANALYTICS_ENABLED=False
out=$work/cache-$name/first.mp4
start=$(now)
"$venv/bin/python" -m lipsync --face "$face" --audio "$audio" --outfile "$out" --checkpoint_path "$checkpoint" \
  --device cpu 2>&1 | tail -1
[ -s "$out" ] && echo "first job (CLI, cold caches): $(seconds "$start" "$(now)") s"

# The app to its first page (a free loopback port), stopped by its own process id.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(now)
LIPSYNC_CHECKPOINT=$checkpoint LIPSYNC_OUTPUT_DIR=$work/cache-$name/app "$venv/bin/python" app.py --host 127.0.0.1 \
  --port "$port" >"$work/app-$name.log" 2>&1 &
app=$!
until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do
  kill -0 "$app" 2>/dev/null || { echo "the app exited:"; tail -5 "$work/app-$name.log"; exit 1; }
  sleep 0.2
done
echo "app to first page: $(seconds "$start" "$(now)") s"
kill "$app"; wait "$app" 2>/dev/null || true

# Download size: the wheels pip fetches for this file (after the timings, so they are not slowed by it).
"$venv/bin/python" -m pip download -q --no-cache-dir -r "$req" -d "$work/download-$name"
echo "download: $(du -sm "$work/download-$name" | cut -f1) MiB in $(ls "$work/download-$name" | wc -l) files"
