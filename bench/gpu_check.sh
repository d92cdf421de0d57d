#!/usr/bin/env bash
# The GPU figures of issue 13 in one run (< 8 minutes on one H100/H200), for the `device` tool:
#   bash bench/gpu_check.sh            # from the repository root; figures go to $OUT (default ./gpu_check_out)
#   DRY=1 bash bench/gpu_check.sh      # the same steps on the CPU with tiny models (checks the script)
#   STEPS="env maze_att" bash bench/gpu_check.sh   # only these steps (default: all four)
# Needs only what that machine's python3 holds (torch with CUDA, numpy, pyyaml, jinja2, filelock, tqdm,
# pandas; no network): it installs nothing, and the package is used from the checkout (PYTHONPATH), not
# pip-installed. submitit and wandb are not there: step 1 fails loudly if the training path needs them.
# Steps (each under its own time limit, all under BUDGET; one failing does not stop the others):
#   1. environment: torch, GPU, compute capability, the dtype arch.forward_dtype=auto picks; the
#      training path and the bench import without submitit and wandb
#   2. Sudoku TRM-MLP, batch 768: correctness vs eager fp32, eager vs compiled, phases, memory, MFU,
#      eval with/without halt_early and the Sudoku-Extreme test-set time
#   3. Maze TRM-Att, batch 384 (192 if 384 does not fit): the same
#   4. Sudoku with CUDA graphs (compile mode reduce-overhead)
#
# GPU time, counted from the architecture (trm/train/flops.py) on one H100/H200 (989 TFLOP/s bf16 dense):
#   Sudoku-MLP: 1.2 GFLOP per sample and network call; a training step runs 21 calls forward and 7
#     backward (2x) = 35 call-equivalents, 43 GFLOP/sample, 33 TFLOP per step of 768. Eager at the ~4%
#     MFU of the reference: 0.85 s/step; compiled at the 25% target: 0.13 s/step. Steps: fast 3+20+20,
#     eager 3+20 -> ~6 s + ~20 s. Eval: 4 batches x 16 ACT steps x 21 calls = 1.3 PFLOP per pass, two
#     passes at ~20% MFU -> ~13 s. Compilation of the train and eval graphs (unrolled 21 calls): ~60-90 s.
#     About 2 minutes: limit 150 s.
#   Maze-Att (H_cycles 3, L_cycles 4): 15.9 GFLOP per sample and call (S=916; attention's 4*S*S*D is a fifth
#     of it), 15 calls forward + 5 backward = 25 call-equivalents, 398 GFLOP/sample, 153 TFLOP per step of
#     384. Compiled at the 45% target: 0.34 s/step, eager at ~20%: 0.8 s/step. Steps: fast 2+8+8 -> 6 s,
#     eager 2+8 -> 8 s; eval 1 batch x 16 ACT steps x 15 calls = 1.5 PFLOP per pass, two passes -> ~15 s;
#     compilation ~90 s; the correctness reference in fp32 slices of 64 -> ~10 s.
#     About 2.5 minutes: limit 210 s. Why 384 and not the recipe's 768: the activations kept for the
#     backward are ~25 hidden-sized values per token and block (3 for q/k/v, ~12 for the SwiGLU at 3x width,
#     the rest norms, residuals, projections' inputs),
#     x 916 tokens x 10 blocks (L_cycles+1 calls x 2 layers) x 2 bytes = 234 MB per sample in bf16,
#     180 GB at 768 (over the 141 GB of an H200; the paper splits 768 over 4 GPUs, 192 each), 90 GB at 384.
#   CUDA graphs: 20+4 fast steps of Sudoku (3 s) + recompilation in reduce-overhead mode (~60 s): 90 s.
#   Total: ~15 s (imports) + 150 + 210 + 90 = 465 s; every step is also capped by BUDGET=470 s for the
#   whole script (later steps get what is left, the 192 fallback only that), i.e. under 8 minutes; the
#   machine's start and the copy of $OUT come on top. The script exits 1 if a step failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
# A private compile cache: a compile killed by a time limit can leave a truncated kernel in a shared
# one ("file too short" at the next load), and on the GPU machine the cache starts empty anyway.
CACHE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_inductor.XXXXXX")
trap 'rm -rf "$CACHE"' EXIT
export TORCHINDUCTOR_CACHE_DIR="$CACHE"
STEPS=" ${STEPS:-env sudoku_mlp maze_att sudoku_mlp_graphs} "
start=$(date +%s)
say() { echo "[gpu_check +$(($(date +%s) - start))s] $*" | tee -a "$OUT/summary.txt"; }
want() { [[ "$STEPS" == *" $1 "* ]]; }
FAILED=""

BUDGET=${BUDGET:-470} # seconds for the whole script: later steps get what is left
SCALE=1
if [ "${DRY:-0}" = 1 ]; then
  DEV=cpu
  # The paper's configs at toy size: the same code paths (TRM-MLP token mixer, attention with RoPE, the
  # puzzle embedding, synthetic data of the real shapes, compile, the sliced reference), seconds per step.
  TINY=(arch.hidden_size=32 arch.num_heads=2 arch.expansion=2 arch.L_layers=1 arch.H_cycles=2
    arch.L_cycles=1 arch.halt_max_steps=2 arch.puzzle_emb_ndim=32 arch.puzzle_emb_len=1)
  # A CPU compiles inductor's C++ kernels slowly (minutes on a shared 2-core machine): the time limits
  # are the GPU's, times SCALE. One compile thread: no worker pool to start on a small machine.
  SCALE=${DRY_SCALE:-6}
  export TORCHINDUCTOR_COMPILE_THREADS=1
  # On a shared CPU, threads that wait for each other at every op make tiny steps seconds long (measured
  # at load 15 on 2 cores: an elementwise op 16x slower with 2 threads than with 1).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  DEV=cuda
  TINY=()
fi

if want env; then
  say "1. environment"
  timeout $((60 * SCALE)) "$PY" - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import runpy, sys
import torch
import trm.train.loop, trm.model.trm  # the training path
runpy.run_path("bench/train_speed.py", run_name="gpu_check")  # the bench's imports, without running it
from trm.model.trm import resolve_dtype
bad = {"submitit", "wandb"} & set(sys.modules)
print("torch", torch.__version__, "cuda", torch.version.cuda, "| imported submitit/wandb:", sorted(bad) or "none")
if bad:
    sys.exit(f"the training path imported {sorted(bad)}: it must run without them")
if torch.cuda.is_available():
    d = torch.device("cuda")
    print("gpu", torch.cuda.get_device_name(d), "capability", torch.cuda.get_device_capability(d),
          "| forward_dtype=auto ->", resolve_dtype("auto", d))
else:
    print("no CUDA device")
PY
  env_rc=${PIPESTATUS[0]}
  say "1. environment: exit $env_rc"
  [ "$env_rc" = 0 ] || FAILED="$FAILED env"
fi

bench() { # name, time limit, config, args...
  local name=$1 limit=$(($2 * SCALE)) config=$3
  shift 3
  want "$name" || return 0
  local left=$((BUDGET * SCALE - ($(date +%s) - start)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 30 ]; then
    say "$name: skipped, ${left}s left of the $((BUDGET * SCALE))s budget"
    return 1
  fi
  if [ "${DRY:-0}" = 1 ]; then # later flags win: tiny sizes, the reference in slices of 2
    set -- "$@" --batch 4 --steps 2 --warmup 1 --eval-batch 4 --check-batch 2 "${TINY[@]}"
    [[ " $* " == *" --eval-batches 0 "* ]] || set -- "$@" --eval-batches 1
  fi
  set -- "$config" --device "$DEV" "$@"
  say "$name: bench/train_speed.py $* (limit ${limit}s)"
  timeout "$limit" "$PY" bench/train_speed.py "$@" --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1
  local rc=$?
  grep -v -i "warn" "$OUT/$name.txt" | tail -n 25 | tee -a "$OUT/summary.txt"
  say "$name: exit $rc"
  [ "$rc" = 0 ] || FAILED="$FAILED $name"
  return $rc
}

bench sudoku_mlp 150 trm/configs/sudoku.yaml --batch 768 --steps 20 --warmup 3 --compile --compare-eager \
  --eval-batches 4
bench maze_att 210 trm/configs/maze.yaml --batch 384 --steps 8 --warmup 2 --compile --compare-eager --eval-batches 1
if [ $? -eq 3 ]; then # out of memory at 384
  STEPS="$STEPS maze_att_192 "
  bench maze_att_192 120 trm/configs/maze.yaml --batch 192 --steps 8 --warmup 2 --compile --compare-eager \
    --eval-batches 2 && FAILED="${FAILED/ maze_att/}" # out of memory at 384 is a finding, not a failure
fi
bench sudoku_mlp_graphs 90 trm/configs/sudoku.yaml --batch 768 --steps 20 --warmup 4 --compile --cuda-graphs \
  --eval-batches 0
say "done; figures in $OUT (summary.txt, *.json, *.txt)${FAILED:+; failed:$FAILED}"
[ -z "$FAILED" ]
