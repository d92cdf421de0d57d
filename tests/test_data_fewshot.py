"""The few-shot view: query + demos of the same puzzle, eval demos never trained on, resumable, sharded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fewshot_data import make_rule_dataset
from test_data_arc import build_arc, make_kaggle

from trm.data.fewshot import FewShotTrainIterator, fewshot_eval_batches, read_num_demos
from trm.data.format import read_split


def _view(
    root: Path,
    split: str = "train",
    max_demos: int = 10,
    B: int = 4,
    rank: int = 0,
    world: int = 1,
    max_groups: int = 0,
    seed: int = 0,
) -> FewShotTrainIterator:
    s = read_split(root, split)
    demos = read_num_demos(root, split, len(s.puzzle_identifiers))
    return FewShotTrainIterator(s, demos, max_demos, B, rank, world, seed, epochs_per_chunk=3, max_groups=max_groups)


def _all_batches(it: FewShotTrainIterator, chunks: int = 1) -> list:
    out = []
    for _ in range(chunks):
        out += list(it.chunk_batches())
    return out


@pytest.fixture()
def arc_encoder(tmp_path: Path) -> Path:
    return build_arc(tmp_path, make_kaggle(tmp_path / "kaggle"), "--demos-in", "test", "--num-aug", "3")


def test_items_hold_the_demos_of_their_own_puzzle(arc_encoder: Path) -> None:
    root = arc_encoder
    names = json.loads((root / "identifiers.json").read_text())
    for split in ("train", "test"):
        s = read_split(root, split)
        demos = read_num_demos(root, split, len(s.puzzle_identifiers))
        pid_to_puzzle = {int(i): p for p, i in enumerate(s.puzzle_identifiers)}
        batches = (
            _all_batches(_view(root, split)) if split == "train" else list(fewshot_eval_batches(s, demos, 10, 4, 0, 1))
        )
        assert batches
        for b in batches:
            for i in range(len(b.inputs)):
                if not b.valid[i]:
                    continue
                p = pid_to_puzzle[int(b.puzzle_identifiers[i])]
                lo, k = int(s.puzzle_indices[p]), int(demos[p])
                assert int(b.demo_mask[i].sum()) == k > 0
                assert np.array_equal(b.demo_inputs[i, :k].numpy(), np.asarray(s.inputs[lo : lo + k]))
                assert np.array_equal(b.demo_labels[i, :k].numpy(), np.asarray(s.labels[lo : lo + k]))
                assert (b.demo_inputs[i, k:] == s.meta.pad_id).all()
                # the query is one of the puzzle's queries, never one of its demos
                queries = np.asarray(s.inputs[lo + k : int(s.puzzle_indices[p + 1])])
                assert any(np.array_equal(b.inputs[i].numpy(), q) for q in queries)
            if split == "train":
                assert not any(names[int(i)].startswith("eval") for i in b.puzzle_identifiers)


def test_eval_tasks_demos_never_train_even_in_a_trm_build(tmp_path: Path) -> None:
    """A --demos-in train build puts the eval tasks' demos in train (no queries): the view skips them."""
    root = build_arc(tmp_path, make_kaggle(tmp_path / "kaggle"), "--num-aug", "3")
    names = json.loads((root / "identifiers.json").read_text())
    it = _view(root)
    assert it.num_groups == 3  # the 3 training tasks; the 2 eval tasks' demo-only groups are left out
    seen = {names[int(i)].split("|")[0] for b in _all_batches(it, 2) for i in b.puzzle_identifiers}
    assert seen and not any(n.startswith("eval") for n in seen)


def test_max_demos_caps_and_pads(arc_encoder: Path) -> None:
    b = next(iter(_view(arc_encoder, max_demos=1).chunk_batches()))
    assert b.demo_inputs.shape[1] == 1 and b.demo_mask.all()


def test_resume_continues_the_same_stream(tmp_path: Path) -> None:
    root = make_rule_dataset(tmp_path / "rules", num_train_tasks=5, num_aug=3)
    whole = _all_batches(_view(root, B=4), 2)
    it = _view(root, B=4)
    gen = it.chunk_batches()
    first = [next(gen) for _ in range(2)]
    state = it.state_dict()
    again = _view(root, B=4)
    again.load_state_dict(state)
    rest = _all_batches(again, 1)
    rest += _all_batches(again, 1)
    got = first + rest
    assert len(got) == len(whole)
    for a, b in zip(got, whole):
        for k, v in a.as_dict().items():
            assert torch.equal(v, b.as_dict()[k]), k


def test_two_ranks_split_the_global_batch(tmp_path: Path) -> None:
    root = make_rule_dataset(tmp_path / "rules", num_train_tasks=5, num_aug=3)
    one = _all_batches(_view(root, B=4))
    r0, r1 = _all_batches(_view(root, B=4, rank=0, world=2)), _all_batches(_view(root, B=4, rank=1, world=2))
    assert len(one) == len(r0) == len(r1)
    for a, b, c in zip(one, r0, r1):
        for k, v in a.as_dict().items():
            assert torch.equal(v, torch.cat([b.as_dict()[k], c.as_dict()[k]])), k


def test_group_and_augmentation_subsets(tmp_path: Path) -> None:
    root = make_rule_dataset(tmp_path / "rules", num_train_tasks=3, num_test_tasks=3, num_aug=3)
    names = json.loads((root / "identifiers.json").read_text())
    train = read_split(root, "train")
    first_two = {names[int(i)].split("|")[0] for i in train.puzzle_identifiers[:6]}
    seen = {
        names[int(i)].split("|")[0]
        for b in _all_batches(_view(root, B=2, max_groups=2), 2)
        for i in b.puzzle_identifiers
    }
    assert seen == first_two
    s = read_split(root, "test")
    demos = read_num_demos(root, "test", len(s.puzzle_identifiers))
    count = lambda **kw: sum(int(b.valid.sum()) for b in fewshot_eval_batches(s, demos, 10, 4, 0, 1, **kw))  # noqa: E731
    assert count() == 3 * 3 * 2
    assert count(max_groups=2) == 2 * 3 * 2
    assert count(max_augmentations=1) == 3 * 1 * 2
