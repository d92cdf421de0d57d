"""The speed machinery computes what the plain path computes: compile (and its fallback), the
prefetcher's resume state, the sync-free sparse update, the dtype choice per GPU, and the training
path importing without the cluster extras (submitit, wandb)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY

from trm import config as C
from trm.data.format import read_split
from trm.data.iterator import TrainIterator
from trm.model.trm import resolve_dtype
from trm.train.optim import sum_per_slot
from trm.train.prefetch import Prefetcher


def _train_losses(run_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e["train/loss"] for e in lines if e["event"] == "train"]


def _train(sudoku4: Path, root: Path, name: str, *extra: str, env: dict[str, str] | None = None):
    args = [
        "trm/configs/quickstart.yaml",
        *TINY,
        f"data_paths=[{sudoku4}]",
        f"run.root={root}",
        f"+run_name={name}",
        "train.max_steps=6",
        "log.log_interval=1",
        "train.seed=3",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "trm.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


@pytest.mark.slow
def test_compiled_recursion_trains_like_eager_and_a_failed_compile_falls_back_loudly(sudoku4, tmp_path):
    eager = _train(sudoku4, tmp_path, "eager")
    compiled = _train(sudoku4, tmp_path, "compiled", "train.compile=true")
    # A CPU node without a working C++ compiler: inductor cannot build its kernels.
    broken = _train(sudoku4, tmp_path, "broken", "train.compile=true", env={"CXX": "/bin/false"})
    for res in (eager, compiled, broken):
        assert res.returncode == 0, res.stderr[-3000:]
    ref = _train_losses(tmp_path / "eager")
    assert len(ref) == 6
    assert _train_losses(tmp_path / "compiled") == pytest.approx(ref, rel=1e-4)
    assert "torch.compile failed" not in (tmp_path / "compiled" / "train.log").read_text()
    log = (tmp_path / "broken" / "train.log").read_text()
    assert "train.compile=true but torch.compile failed" in log and "running the recursion eagerly" in log
    assert _train_losses(tmp_path / "broken") == pytest.approx(ref, rel=1e-6)
    # Same parameter names as eager: compiled runs' checkpoints are interchangeable with eager ones.
    a = torch.load(tmp_path / "eager" / "checkpoints" / "step-00000006" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "compiled" / "checkpoints" / "step-00000006" / "state.pt", weights_only=False)
    assert a["model"].keys() == b["model"].keys()


def test_a_compile_failure_in_the_backward_falls_back_to_eager_before_the_backward_runs():
    """torch.compile builds the backward at the first loss.backward(), outside the wrapper: a failure
    there (seen here with a corrupt inductor cache entry) must fall back like a forward failure."""
    from torch._dynamo.backends.common import aot_autograd

    from trm.model.trm import TRMInner
    from trm.train.compiled import _CompiledOrEager

    def failing_backward(gm, example_inputs):
        raise RuntimeError("no backward compiler here")

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=lambda gm, example_inputs: gm, bw_compiler=failing_backward)
    arch = C.ArchConfig(
        hidden_size=16, num_heads=2, L_layers=1, H_cycles=2, L_cycles=1, puzzle_emb_ndim=0, puzzle_emb_len=0
    )
    torch.manual_seed(0)
    inner = TRMInner(arch, 5, 6, 1, 2, torch.float32)
    warnings_: list[str] = []
    eager = inner.recurse
    wrapper = _CompiledOrEager(eager, torch.compile(eager, backend=backend), warnings_.append, list(inner.parameters()))
    z = torch.randn(2, 6, 16)
    x = torch.randn(2, 6, 16)
    _, _, logits, q_halt, _ = wrapper(z, z, x)
    (logits.sum() + q_halt.sum()).backward()  # without the check this raises the backward compiler's error
    assert wrapper.failed is not None and "no backward compiler here" in wrapper.failed
    assert len(warnings_) == 1 and "running the recursion eagerly" in warnings_[0]
    got = {n: p.grad for n, p in inner.named_parameters() if p.grad is not None}
    inner.zero_grad(set_to_none=True)
    _, _, logits, q_halt, _ = eager(z, z, x)
    (logits.sum() + q_halt.sum()).backward()
    want = {n: p.grad for n, p in inner.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() and len(got) > 3  # the recursion's weights and the heads
    assert all(torch.equal(got[n], want[n]) for n in want)
    torch._dynamo.reset()


def test_prefetcher_yields_the_same_batches_and_resumes_where_the_consumer_stands(sudoku4):
    split = read_split(sudoku4, "train")

    def fresh() -> TrainIterator:
        return TrainIterator(split, 16, 0, 1, seed=5, epochs_per_chunk=1)

    plain = list(fresh().chunk_batches())
    it = fresh()
    ahead = Prefetcher(it.chunk_batches(), torch.device("cpu"), it.state_dict, lookahead=True)
    got = []
    for i, batch in enumerate(ahead):
        got.append(batch)
        if i == 2:
            # The sampler has drawn batch 3 already; a resume must still start at batch 3.
            resumed = fresh()
            resumed.load_state_dict(ahead.resume_state())
            assert torch.equal(next(iter(resumed.chunk_batches())).inputs, plain[3].inputs)
    assert len(got) == len(plain) and all(torch.equal(a.inputs, b.inputs) for a, b in zip(got, plain))
    # After the last batch the resume state is the chunk's end: the resumed loop runs that chunk's eval.
    end = fresh()
    end.load_state_dict(ahead.resume_state())
    assert end.chunk == 0 and list(end.chunk_batches()) == [] and end.chunk == 1


def test_sync_free_sparse_sum_equals_the_unique_index_add():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (64,), generator=g)
    grad = torch.randn(64, 8, generator=g)
    uniq, inverse = ids.unique(return_inverse=True)
    by_id = torch.zeros(len(uniq), 8).index_add_(0, inverse, grad)
    per_slot = sum_per_slot(ids, grad)
    assert torch.allclose(per_slot, by_id[inverse], atol=1e-5)
    first = {int(i): per_slot[(ids == i).nonzero()[0, 0]] for i in uniq}
    assert all(torch.equal(per_slot[k], first[int(ids[k])]) for k in range(64))  # duplicates write one value


@pytest.mark.parametrize(
    "capability,expected",
    [
        ((7, 0), torch.float32),
        ((7, 5), torch.float32),
        ((8, 0), torch.bfloat16),
        ((8, 9), torch.bfloat16),
        ((9, 0), torch.bfloat16),
    ],
)
def test_auto_dtype_is_bf16_only_where_the_gpu_runs_it_natively(capability, expected):
    assert resolve_dtype("auto", torch.device("cuda"), capability) == expected
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", torch.device("cuda"), capability) == torch.float16


BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('submitit', 'wandb'):
            raise ImportError(f'blocked for this test: {name}')
        return None
sys.meta_path.insert(0, _Block())
"""


def test_training_path_and_bench_run_without_submitit_or_wandb(sudoku4, tmp_path):
    """The GPU check machine has torch, numpy, yaml, jinja2, filelock, tqdm, pandas, not submitit/wandb."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    code = "import trm.train.loop, trm.model.trm, sys; assert not {'submitit', 'wandb'} & set(sys.modules); print('ok')"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
    res = subprocess.run([sys.executable, "-c", "import submitit"], capture_output=True, text=True, env=env)
    assert "blocked for this test" in res.stderr  # the blocker works
    out = tmp_path / "bench.json"
    res = subprocess.run(
        [
            sys.executable,
            "bench/train_speed.py",
            "trm/configs/quickstart.yaml",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--eval-batches",
            "1",
            "--compare-eager",
            "--json",
            str(out),
            *TINY,
            f"data_paths=[{sudoku4}]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[-1].startswith("speedup vs eager: ") and lines[-1].endswith("x")
    figures = json.loads(out.read_text())
    assert figures["correctness_rel_err"]["logits"] < 1e-5
    assert figures["train"]["samples_per_s"] > 0 and set(figures["train"]["phases_ms"]) == {
        "data",
        "forward",
        "backward",
        "optimizer",
    }
    assert np.isfinite(figures["eval"]["exact_accuracy_difference"])


def _gpu_check(tmp_path: Path, steps: str) -> tuple[subprocess.CompletedProcess, Path]:
    """bench/gpu_check.sh in its CPU dry mode, under a python that cannot import submitit or wandb."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path / "out"
    env = {**os.environ, "DRY": "1", "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": str(site)}
    if steps:
        env["STEPS"] = steps
    res = subprocess.run(
        ["bash", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=3000
    )
    return res, out


def test_gpu_check_environment_step_imports_the_training_path_and_the_bench_without_extras(tmp_path):
    res, out = _gpu_check(tmp_path, "env")
    summary = (out / "summary.txt").read_text()
    assert res.returncode == 0, summary + res.stderr[-2000:]
    assert "imported submitit/wandb: none" in summary and "1. environment: exit 0" in summary
    assert "blocked for this test" not in summary and "failed" not in summary


@pytest.mark.slow
def test_gpu_check_dry_run_completes_every_step_on_the_cpu(tmp_path):
    """Every step the GPU run makes (correctness, both benches with eager comparison, evaluation, the
    CUDA-graph variant), at toy size on the CPU, writing its figures to $OUT."""
    res, out = _gpu_check(tmp_path, "")
    summary = (out / "summary.txt").read_text()
    assert res.returncode == 0, summary[-4000:] + res.stderr[-2000:]
    assert "failed" not in summary and "skipped" not in summary
    for name in ("sudoku_mlp", "maze_att", "sudoku_mlp_graphs"):
        assert f"{name}: exit 0" in summary
        figures = json.loads((out / f"{name}.json").read_text())
        assert figures["compile"] is True and figures["compile_failed"] is None and figures["batch"] == 4
        assert all(v < 1e-4 for v in figures["correctness_rel_err"].values()), figures["correctness_rel_err"]
        assert figures["train"]["samples_per_s"] > 0
    for name in ("sudoku_mlp", "maze_att"):
        figures = json.loads((out / f"{name}.json").read_text())
        assert figures["speedup_vs_eager"] > 0 and np.isfinite(figures["eval"]["exact_accuracy_difference"])
        assert (out / f"{name}.txt").read_text().strip().splitlines()[-1].startswith("speedup vs eager: ")
    assert "reference in slices of 2" in (out / "maze_att.txt").read_text()
    assert json.loads((out / "sudoku_mlp_graphs.json").read_text())["cuda_graphs"] is True


def test_prefetcher_keeps_every_field_of_a_few_shot_batch():
    """Pinning rebuilds the batch: a few-shot batch must keep its demos (its class and every tensor)."""
    from trm.data.fewshot import FewShotBatch
    from trm.train.prefetch import _tensors

    b, k, n = 2, 3, 4
    batch = FewShotBatch(
        torch.zeros(b, n, dtype=torch.int32),
        torch.zeros(b, n),
        torch.zeros(b, dtype=torch.int32),
        torch.ones(b, dtype=torch.bool),
        torch.ones(b, k, n, dtype=torch.int32),
        torch.ones(b, k, n, dtype=torch.int32),
        torch.ones(b, k, dtype=torch.bool),
    )
    tensors = _tensors(batch)
    assert len(tensors) == 7 and tensors[-1] is batch.demo_mask
    rebuilt = type(batch)(*tensors)
    assert isinstance(rebuilt, FewShotBatch) and rebuilt.demo_inputs is batch.demo_inputs
