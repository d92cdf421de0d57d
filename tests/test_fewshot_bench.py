"""The few-shot benchmark's evaluator (scores per split and rule) and the bench end to end (tiny, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_data_arc import build_arc
from trm.data import arc
from trm.data.fewshot_tasks import RULES, FewShotSpec, generate, task_split_and_rule, write_kaggle
from trm.data.format import Metadata, read_split
from trm.evaluators import get_evaluator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fewshot")
    spec = FewShotSpec(seed=2, num_train=8, num_seen=8, num_heldout=6, max_size=5)
    write_kaggle(generate(spec), tmp / "src", spec)
    return build_arc(tmp, tmp / "src", "--canvas-size", "5", "--demos-in", "test", "--no-colour-aug")


def _rows(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    test = read_split(out, "test")
    ids = np.repeat(test.puzzle_identifiers, np.diff(test.puzzle_indices))
    names = json.loads((out / "identifiers.json").read_text())
    tasks = [arc.parse_name(names[i])[0] for i in ids]
    return np.asarray(test.inputs), np.asarray(test.labels).astype(np.int64), ids, tasks


def test_scores_by_split_and_rule_skip_demos(built: Path) -> None:
    meta = Metadata.from_json(built / "test" / "dataset.json")
    inputs, labels, ids, tasks = _rows(built)
    ev = get_evaluator("fewshot", built, meta)
    # right answers for held-out colour maps only; every other row wrong in one grid cell
    preds = labels.copy()
    wrong = np.array([task_split_and_rule(t) != ("heldout", "colour_map") for t in tasks])
    cell = np.argmax(labels >= arc.COLOUR_OFFSET, axis=1)
    preds[wrong, cell[wrong]] = np.where(labels[wrong, cell[wrong]] == 2, 3, 2)
    labels_ign = np.where(labels == arc.PAD, -100, labels)
    ev.begin()
    ev.update(inputs, labels_ign, ids, preds, np.zeros(len(ids)))
    r = ev.result()
    assert r["heldout/colour_map/exact"] == 1.0 and r["heldout/colour_map/pass@2"] == 1.0
    assert r["heldout/colour_map/cell"] == 1.0
    assert r["heldout/dihedral_colour_map/exact"] == 0.0 and r["seen/exact"] == 0.0
    assert 0.8 < r["seen/cell"] < 1.0  # one wrong cell per grid of 9..25 cells
    assert 0.0 < r["heldout/exact"] < 1.0
    # demo rows (also in the test split, ahead of each puzzle's queries) are not scored
    test = read_split(built, "test")
    num_demos = np.load(built / "test" / "all__num_demos.npy")
    queries = int((np.diff(test.puzzle_indices) - num_demos).sum())
    assert ev.rows["seen"][0] + ev.rows["heldout"][0] == queries < len(ids)


def _bench(tmp_path: Path, *options: str) -> list[str]:
    """bench/fewshot.py at toy size (16 training tasks, hidden 16), with the given options."""
    return [
        sys.executable,
        "bench/fewshot.py",
        *options,
        "--eval-minutes",
        "0.05",
        "--num-train",
        "16",
        "--num-eval",
        "4",
        "--work",
        str(tmp_path),
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "train.global_batch_size=8",
    ]


def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    cmd = _bench(tmp_path, "--minutes", "0.05", "--baseline-minutes", "0.05", "--num-aug", "1")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert any(line.startswith("encoder  heldout per rule") for line in lines)
    assert any(line.startswith("baseline    seen per rule") for line in lines)
    last = lines[-1].split()
    assert lines[-1].startswith("held-out exact accuracy ") and last[-1] == "s"
    assert 0.0 <= float(last[3]) <= 1.0 and 0.0 <= float(last[5].rstrip(")")) <= 1.0


def _rule_kinds(data: Path) -> set[str]:
    names = json.loads((data / "identifiers.json").read_text())[1:]  # 0 is the blank puzzle
    return {task_split_and_rule(arc.parse_name(n)[0])[1] for n in names}


def test_bench_curriculum_carries_every_weight_into_the_full_set(tmp_path: Path) -> None:
    options = ["--minutes", "0.1", "--curriculum-minutes", "0.05", "--baseline-minutes", "0", "--num-aug", "1"]
    options += ["--curriculum-rules", "dihedral", "shift"]
    out = subprocess.run(_bench(tmp_path, *options), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "-dihedral+shift-easy, then the full set" in text and "\nstage 1 :" in text
    # the first stage on the geometric rules only (two shifts, two dihedral transforms, no dihedral variants
    # to make more of them), the second on all
    (easy,) = (tmp_path / "data").glob("*-aug0-notr-dihedral+shift-easy")
    (full,) = (tmp_path / "data").glob("*-aug1-notr")
    assert _rule_kinds(easy) == {"shift", "dihedral"} and _rule_kinds(full) == set(RULES)
    init = [line for line in text.splitlines() if line.startswith("init_from ")]
    assert len(init) == 1 and "-stage1/checkpoints/step-" in init[0], text[-2000:]
    assert "; missing 0;" in init[0]  # the encoder's weights too, not a fresh encoder
    assert text.strip().splitlines()[-1].startswith("held-out exact accuracy ")
    bad = _bench(tmp_path, "--minutes", "0.2", "--curriculum-minutes", "0.2")
    refused = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--curriculum-minutes must be in [0, --minutes=0.2), got 0.2" in refused.stderr
    bad = _bench(tmp_path, "--minutes", "0.2", "--curriculum-rules", "shift")
    refused = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "give --curriculum-minutes > 0" in refused.stderr
