"""The on-disk format's validator and the resumable iterator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trm.data.format import Metadata, read_split, validate_dataset, write_identifiers, write_split
from trm.data.iterator import TrainIterator, eval_batches
from trm.model.trm import IGNORE_LABEL


def make_dataset(root: Path, group_sizes: list[list[int]], seq_len: int = 4, vocab: int = 7) -> Path:
    """Groups of puzzles of examples; example e holds the token e % vocab (so rows are traceable)."""
    inputs, puzzle_indices, group_indices, ids = [], [0], [0], []
    e = 0
    for g, puzzles in enumerate(group_sizes):
        for n in puzzles:
            for _ in range(n):
                inputs.append(np.full(seq_len, e % (vocab - 1) + 1))
                e += 1
            puzzle_indices.append(e)
            ids.append(g + 1)
        group_indices.append(len(ids))
    meta = Metadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=vocab,
        seq_len=seq_len,
        num_puzzle_identifiers=len(group_sizes) + 1,
        total_groups=len(group_sizes),
        mean_puzzle_examples=e / len(ids),
    )
    arr = np.stack(inputs)
    for split in ("train", "test"):
        write_split(root, split, meta, arr, arr, np.array(ids), np.array(puzzle_indices), np.array(group_indices))
    write_identifiers(root, ["<blank>"] + [f"g{i}" for i in range(len(group_sizes))])
    return root


def test_validator_accepts_a_good_folder_and_names_each_problem(tmp_path):
    good = make_dataset(tmp_path / "good", [[1, 2], [3]])
    assert validate_dataset(good) == []

    def broken(name: str, edit) -> list[str]:
        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d / "train")
        return validate_dataset(d)

    assert any(
        "missing" in p and "all__labels.npy" in p for p in broken("missing", lambda d: (d / "all__labels.npy").unlink())
    )
    assert any(
        "not a readable .npy" in p for p in broken("corrupt", lambda d: (d / "all__inputs.npy").write_bytes(b"garbage"))
    )
    assert any(
        "shape" in p and "seq_len=4" in p
        for p in broken("shape", lambda d: np.save(d / "all__inputs.npy", np.zeros((6, 5), np.uint8)))
    )
    assert any(
        "dtype float" in p
        for p in broken("dtype", lambda d: np.save(d / "all__labels.npy", np.zeros((6, 4), np.float32)))
    )
    assert any(
        "not strictly increasing" in p
        for p in broken("order", lambda d: np.save(d / "all__puzzle_indices.npy", np.array([0, 3, 1, 6])))
    )
    assert any(
        "outside the vocabulary" in p and "example 2" in p
        for p in broken(
            "vocab",
            lambda d: np.save(d / "all__inputs.npy", np.where(np.arange(24).reshape(6, 4) == 9, 9, 1).astype(np.uint8)),
        )
    )
    meta_bad = broken("meta", lambda d: (d / "dataset.json").write_text("{"))
    assert any("dataset.json: not valid JSON" in p for p in meta_bad)
    assert validate_dataset(tmp_path / "nope") == [f"dataset folder '{tmp_path / 'nope'}' does not exist"]


def test_train_batches_pick_one_puzzle_per_group_and_drop_the_last_partial(tmp_path):
    root = make_dataset(tmp_path / "d", [[1] * 3 for _ in range(10)])  # 10 groups of 3 single-example puzzles
    split = read_split(root, "train")
    it = TrainIterator(split, global_batch_size=4, rank=0, world_size=1, seed=0, epochs_per_chunk=2)
    batches = list(it.chunk_batches())
    assert len(batches) == 5  # 2 epochs x 10 groups = 20 examples = 5 full batches
    puzzles = np.concatenate([b.inputs[:, 0].numpy() - 1 for b in batches])  # example index (< vocab-1 here...)
    assert len(puzzles) == 20
    groups_seen = np.concatenate([b.puzzle_identifiers.numpy() for b in batches])
    assert sorted(groups_seen[:10].tolist()) == list(range(1, 11))  # first epoch: every group once
    assert it.chunk == 1 and it.epoch() == 2.0
    # multi-example puzzles: whole puzzles, cut at the batch edge, partial batch dropped
    root2 = make_dataset(tmp_path / "m", [[3], [2], [4]])
    it2 = TrainIterator(read_split(root2, "train"), 4, 0, 1, seed=1, epochs_per_chunk=3)
    b2 = list(it2.chunk_batches())
    assert all(b.inputs.shape == (4, 4) for b in b2) and 1 <= len(b2) <= 6


def test_ranks_get_slices_of_the_same_global_batch(tmp_path):
    root = make_dataset(tmp_path / "d", [[1, 1] for _ in range(16)])
    split = read_split(root, "train")
    whole = [b.puzzle_identifiers for b in TrainIterator(split, 8, 0, 1, 3, 2).chunk_batches()]
    r0 = [b.puzzle_identifiers for b in TrainIterator(split, 8, 0, 2, 3, 2).chunk_batches()]
    r1 = [b.puzzle_identifiers for b in TrainIterator(split, 8, 1, 2, 3, 2).chunk_batches()]
    for w, a, b in zip(whole, r0, r1):
        assert w.tolist() == a.tolist() + b.tolist()
    with pytest.raises(ValueError, match="divisible"):
        TrainIterator(split, 9, 0, 2, 3, 2)


def test_state_dict_resumes_the_same_sequence(tmp_path):
    root = make_dataset(tmp_path / "d", [[1, 2, 1] for _ in range(12)])
    split = read_split(root, "train")
    ref = TrainIterator(split, 5, 0, 1, 7, 3)
    full = [b.inputs.clone() for _ in range(2) for b in ref.chunk_batches()]
    it = TrainIterator(split, 5, 0, 1, 7, 3)
    gen = it.chunk_batches()
    first = [next(gen).inputs.clone() for _ in range(3)]
    state = json.loads(json.dumps(it.state_dict(), default=lambda o: o.tolist()))  # survives serialisation
    resumed = TrainIterator(split, 5, 0, 1, 7, 3)
    resumed.load_state_dict(state)
    rest = [b.inputs.clone() for b in resumed.chunk_batches()] + [b.inputs.clone() for b in resumed.chunk_batches()]
    assert len(first + rest) == len(full)
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, full))


def test_test_mode_visits_every_example_once_and_pads(tmp_path):
    root = make_dataset(tmp_path / "d", [[1], [2], [3], [1]])  # 7 examples
    split = read_split(root, "test")
    batches = list(eval_batches(split, 4, 0, 1))
    assert [int(b.valid.sum()) for b in batches] == [4, 3]
    pad = batches[1]
    assert pad.inputs[3].tolist() == [0] * 4 and pad.labels[3].tolist() == [IGNORE_LABEL] * 4
    assert pad.puzzle_identifiers[3] == 0
    seen = np.concatenate([b.inputs[b.valid][:, 0].numpy() for b in batches])
    assert seen.tolist() == [1, 2, 3, 4, 5, 6, 1]  # token = example % 6 + 1
    r0, r1 = list(eval_batches(split, 4, 0, 2)), list(eval_batches(split, 4, 1, 2))
    assert [b.inputs.shape[0] for b in r0 + r1] == [2, 2, 2, 2]
    assert len(list(eval_batches(split, 4, 0, 1, max_batches=1))) == 1


def test_check_data_cli_reports_problems_and_exit_code(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    good = make_dataset(tmp_path / "good", [[1, 2], [3]])
    res = subprocess.run(
        [sys.executable, str(root / "tools" / "check_data.py"), str(good)], capture_output=True, text=True
    )
    assert res.returncode == 0 and "train: ok: 6 examples, 3 puzzles, 2 groups" in res.stdout
    (good / "test" / "all__group_indices.npy").unlink()
    res = subprocess.run(
        [sys.executable, str(root / "tools" / "check_data.py"), str(good)], capture_output=True, text=True
    )
    assert res.returncode == 1 and "all__group_indices.npy: missing" in res.stdout
