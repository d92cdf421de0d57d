#!/usr/bin/env bash
# The GPU figures of issue 13 in one run (< 8 minutes on one H100/H200), for the `device` tool:
#   bash bench/gpu_check.sh            # from the repository root; figures go to $OUT (default ./gpu_check_out)
# Needs only what that machine's python3 holds (torch with CUDA, numpy, pyyaml, tqdm, filelock): it
# installs nothing, and the package is used from the checkout (PYTHONPATH), not pip-installed.
# Steps (each under its own time limit; one failing does not stop the others):
#   1. environment: torch, GPU, compute capability, the dtype arch.forward_dtype=auto picks; the
#      training path imports without submitit and wandb
#   2. Sudoku TRM-MLP, batch 768: correctness vs eager fp32, eager vs compiled, phases, memory, MFU,
#      eval with/without halt_early and the Sudoku-Extreme test-set time
#   3. Maze TRM-Att, batch 768 (384 if 768 does not fit): the same
#   4. Sudoku with CUDA graphs (compile mode reduce-overhead)
# DRY=1 runs the same steps on the CPU with the quick-start config and tiny sizes (checks the script).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
start=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/summary.txt"; }

say "1. environment"
timeout 30 "$PY" - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import sys, torch
import trm.train.loop, trm.model.trm  # the training path
from trm.model.trm import resolve_dtype
bad = {"submitit", "wandb"} & set(sys.modules)
print("torch", torch.__version__, "cuda", torch.version.cuda, "| imported submitit/wandb:", sorted(bad) or "none")
if torch.cuda.is_available():
    d = torch.device("cuda")
    print("gpu", torch.cuda.get_device_name(d), "capability", torch.cuda.get_device_capability(d),
          "| forward_dtype=auto ->", resolve_dtype("auto", d))
else:
    print("no CUDA device")
PY

BUDGET=${BUDGET:-470}  # seconds for the whole script: later steps get what is left
if [ "${DRY:-0}" = 1 ]; then DEV=cpu; else DEV=cuda; fi

bench() {  # name, time limit, config, args...
  local name=$1 limit=$2 config=$3; shift 3
  local left=$(( BUDGET - ($(date +%s) - start) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 30 ]; then say "$name: skipped, ${left}s left of the ${BUDGET}s budget"; return 1; fi
  if [ "${DRY:-0}" = 1 ]; then
    config=trm/configs/quickstart.yaml
    set -- "$@" --batch 16 --steps 2 --warmup 1 --eval-batch 16
  fi
  set -- "$config" --device "$DEV" "$@"
  say "$name: bench/train_speed.py $* (limit ${limit}s)"
  timeout "$limit" "$PY" bench/train_speed.py "$@" --json "$OUT/$name.json" > "$OUT/$name.txt" 2>&1
  local rc=$?
  grep -v -i "warn" "$OUT/$name.txt" | tail -n 25 | tee -a "$OUT/summary.txt"
  say "$name: exit $rc"
  return $rc
}

bench sudoku_mlp 150 trm/configs/sudoku.yaml --batch 768 --steps 20 --warmup 3 --compile --compare-eager \
  --eval-batches 4
bench maze_att 210 trm/configs/maze.yaml --batch 768 --steps 8 --warmup 2 --compile --compare-eager --eval-batches 1
if [ $? -eq 3 ]; then  # out of memory at 768
  bench maze_att_384 120 trm/configs/maze.yaml --batch 384 --steps 8 --warmup 2 --compile --compare-eager \
    --eval-batches 2
fi
bench sudoku_mlp_graphs 90 trm/configs/sudoku.yaml --batch 768 --steps 20 --warmup 4 --compile --cuda-graphs \
  --eval-batches 0
say "done; figures in $OUT (summary.txt, *.json, *.txt)"
