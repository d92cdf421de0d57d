"""tools/show.py: text and PNG for every puzzle kind, with and without predictions (seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trm.data.build import main as build
from trm.data.format import read_split
from trm.data.render import guess_kind
from trm.data.show import main as show

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("show")
    cmds = {
        "sudoku": ["sudoku4x4", "--num-train", "5", "--num-test", "5", "--num-aug", "1"],
        "maze": ["maze", "--generate", "2", "--size", "12", "--min-path-len", "10"],
        "arc": ["arc", "--subset", "1", "--num-aug", "1"],
        "hanoi": ["hanoi", "--train-min", "2", "--train-max", "2", "--test-min", "3", "--test-max", "3"],
    }
    out = {}
    for kind, cmd in cmds.items():
        out[kind] = tmp / kind
        assert build([*cmd, "--out", str(out[kind])]) == 0
    return out


@pytest.mark.parametrize("kind, marker", [("sudoku", "-+-"), ("maze", "S"), ("arc", "|"), ("hanoi", "peg 3")])
def test_dataset_text_and_png(
    datasets: dict[str, Path], tmp_path: Path, kind: str, marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / f"{kind}.png"
    assert show([str(datasets[kind]), "--num", "2", "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert marker in text and "test row 1" in text
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def _preds_file(data: Path, tmp_path: Path, corrupt: int) -> Path:
    test = read_split(data, "test")
    inputs = np.asarray(test.inputs).astype(np.int64)
    raw = np.asarray(test.labels).astype(np.int64)
    preds = raw.copy()
    preds[corrupt, 0] = 2 if preds[corrupt, 0] != 2 else 3
    path = tmp_path / "preds.npz"
    np.savez(path, inputs=inputs, labels=np.where(raw == 0, -100, raw), preds=preds)
    return path


def test_predictions_mark_errors(datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _preds_file(datasets["sudoku"], tmp_path, corrupt=3)
    png = tmp_path / "p.png"
    assert show([str(path), "--wrong", "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "test row 3" in text and "test row 0" not in text  # only the wrong example
    assert "prediction" in text and "!" in text
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_hanoi_prediction_legality_is_reported(
    datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test = read_split(datasets["hanoi"], "test")
    raw = np.asarray(test.labels).astype(np.int64)
    preds = raw.copy()
    preds[0, 0] = 4 + 2  # the largest disk is buried at the start: illegal
    path = tmp_path / "h.npz"
    np.savez(path, inputs=np.asarray(test.inputs), labels=np.where(raw == 0, -100, raw), preds=preds)
    assert show([str(path), "--data", str(datasets["hanoi"]), "--index", "0", "--no-png"]) == 0
    assert "pred:  illegal: disk 2 is under a smaller disk [wrong]" in capsys.readouterr().out


def test_kind_is_guessed_from_rows(datasets: dict[str, Path]) -> None:
    for kind, data in datasets.items():
        assert guess_kind(np.asarray(read_split(data, "test").inputs)) == kind


def test_bad_inputs(tmp_path: Path, datasets: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((2, 16)))
    assert show([str(bad)]) == 2
    assert "missing arrays ['labels', 'preds']" in capsys.readouterr().err
    assert show([str(datasets["sudoku"]), "--index", "99"]) == 2
    assert "--index [99] outside [0, 5)" in capsys.readouterr().err
    assert show([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
