#!/usr/bin/env bash
# Create .venv (once) and install lipsync's requirements into it.
#   bash scripts/setup.sh        the GPU install (requirements.txt) where an NVIDIA driver is present, else the
#                                lean CPU install (requirements-cpu.txt: no torch, no mediapipe, one OpenCV wheel)
#   bash scripts/setup.sh cpu    the CPU install, whatever the machine     (or LIPSYNC_INSTALL=cpu)
#   bash scripts/setup.sh gpu    the GPU install, whatever the machine     (or LIPSYNC_INSTALL=gpu)
#   bash scripts/setup.sh dev    the GPU install, the test references and the test tools (requirements-dev.txt)
#   bash scripts/setup.sh which  says which file the command without an argument would install, and why; no install
# PYTHON picks the interpreter that makes .venv (default python3; 3.10 to 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."

nvidia_driver() {  # what lipsync.runtime.devices.nvidia_driver_present checks, without Python
  [ -e /proc/driver/nvidia ] || [ -e /dev/nvidiactl ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
}

kind=${1:-${LIPSYNC_INSTALL:-auto}}
only_say=
if [ "$kind" = which ]; then only_say=1; kind=${LIPSYNC_INSTALL:-auto}; fi
case "$kind" in
  auto)
    if nvidia_driver; then kind=gpu; why="an NVIDIA driver is present"; else kind=cpu; why="no NVIDIA driver found"; fi ;;
  cpu|gpu|dev) why="asked for" ;;
  *) echo "Unknown install '$kind': use cpu, gpu, dev or nothing (chosen by the machine)." >&2; exit 2 ;;
esac
case "$kind" in
  cpu) file=requirements-cpu.txt; what="the CPU install (no PyTorch; add requirements-gpu.txt for a GPU)" ;;
  gpu) file=requirements.txt; what="the GPU install (PyTorch's CUDA build, about 4.6 GB)" ;;
  dev) file=requirements-dev.txt; what="the test install (the GPU install, the test references and tools)" ;;
esac
if [ -n "$only_say" ]; then echo "$file ($why)"; exit 0; fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "Could not create .venv with $PY: install Python 3.10 to 3.12 with its venv module (on Debian/Ubuntu: apt-get install python3-venv), or set PYTHON." >&2; exit 1; }
fi
. .venv/bin/activate
echo "Installing $what from $file into .venv ($why)..."
python -m pip install -q --upgrade pip
if ! python -m pip install -q -r "$file"; then
  echo "Installing $file failed: pip's last lines above name the package. Run this again (a network hiccup passes); if it fails again, delete .venv and run it again, or report pip's message with the package's name." >&2
  exit 1
fi
