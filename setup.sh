#!/usr/bin/env bash
# Make .venv and install trm with its test extras. Safe to run again (it only adds what is missing).
#
#   ./setup.sh                          # laptop, CI, this machine
#   ./setup.sh --profile env/dtu-lsf.yaml   # cluster login node: load the profile's modules first
#
# Environment knobs: PYTHON (interpreter to build the venv from), TRM_VENV (venv path, default
# .venv), TRM_TORCH_INDEX_URL (a wheel index for torch, e.g. a site mirror of the CUDA builds),
# TRM_EXTRAS (pip extras, default "test").
set -euo pipefail
cd "$(dirname "$0")"

TORCH_VERSION=2.13.0
profile=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a file, e.g. env/slurm-generic.yaml}"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (expected --profile FILE)" >&2; exit 2 ;;
  esac
done

# Cluster modules come first, so the venv is built from the module's Python.
if [ -n "$profile" ]; then
  [ -f "$profile" ] || { echo "setup.sh: profile '$profile' does not exist (see env/ for the shipped ones)" >&2; exit 2; }
  # The profile's 'modules:' list, one '- name' per line; parsed here because no Python is loaded yet.
  mods=$(awk '/^modules:/{on=1;next} on&&/^[[:space:]]*-/{sub(/^[[:space:]]*-[[:space:]]*/,"");gsub(/["'\'']/,"");print;next} on&&/^[^[:space:]]/{on=0}' "$profile")
  if [ -n "$mods" ]; then
    if type module >/dev/null 2>&1; then
      for m in $mods; do echo "setup.sh: module load $m"; module load "$m"; done
    else
      echo "setup.sh: profile lists modules ($mods) but this shell has no 'module' command; using $(command -v "${PYTHON:-python3}")" >&2
    fi
  fi
fi

venv="${TRM_VENV:-.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "setup.sh: $py is $("$py" --version 2>&1); trm needs Python >= 3.10 (set PYTHON=...)" >&2; exit 2; }
  echo "setup.sh: creating $venv with $("$py" --version 2>&1)"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# torch first and pinned: here the CPU wheel on local disk, on a GPU node PyPI's CUDA build of the
# same release. Skipped when that release is already there.
have=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$TORCH_VERSION" ]; then
  extra=()
  [ -n "${TRM_TORCH_INDEX_URL:-}" ] && extra=(--index-url "$TRM_TORCH_INDEX_URL")
  echo "setup.sh: installing torch==$TORCH_VERSION"
  "${pip[@]}" install -q "torch==$TORCH_VERSION" "${extra[@]}"
fi

echo "setup.sh: installing trm[${TRM_EXTRAS:-test}] (editable)"
"${pip[@]}" install -q -e ".[${TRM_EXTRAS:-test}]"
"$venv/bin/python" -c 'import torch, trm; print(f"setup.sh: ok: torch {torch.__version__}, cuda={torch.cuda.is_available()}, trm at {trm.__path__[0]}")'
