"""Read the puzzle CSV layout shared by Sudoku-Extreme and Maze-Hard: `source,question,answer,rating`.

One row per puzzle; question and answer are row-major strings of `cells` characters. Every problem is
reported with the file and the 1-based line number, so a user can open the file at the bad row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm.data.output import BuildError

HEADERS = (("source", "question", "answer", "rating"), ("source", "q", "a", "rating"))


@dataclass
class PuzzleTable:
    questions: np.ndarray  # (N, cells) uint8 tokens
    answers: np.ndarray  # (N, cells) uint8 tokens
    ratings: np.ndarray  # (N,) float64
    lines: np.ndarray  # (N,) 1-based line numbers in the file, for error messages
    path: Path

    def take(self, idx: np.ndarray) -> PuzzleTable:
        return PuzzleTable(self.questions[idx], self.answers[idx], self.ratings[idx], self.lines[idx], self.path)

    def __len__(self) -> int:
        return int(self.questions.shape[0])


def _lookup(chars: dict[str, int]) -> np.ndarray:
    table = np.full(256, 255, dtype=np.uint8)
    for ch, tok in chars.items():
        table[ord(ch)] = tok
    return table


def read_puzzle_csv(
    path: Path, cells: int, question_chars: dict[str, int], answer_chars: dict[str, int]
) -> PuzzleTable:
    """Parse and check a puzzle CSV; raises BuildError naming file, line and problem."""
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"{path}: CSV file not found (expected columns {','.join(HEADERS[0])})")
    questions: list[str] = []
    answers: list[str] = []
    ratings: list[float] = []
    lines: list[int] = []
    try:
        _read_rows(path, cells, questions, answers, ratings, lines)
    except (UnicodeDecodeError, csv.Error) as e:
        where = f"line {len(lines) + 2} or after" if isinstance(e, UnicodeDecodeError) else "a row"
        raise BuildError(
            f"{path}: {where}: cannot be read as UTF-8 CSV ({e}); save the file as UTF-8 with the "
            f"columns {','.join(HEADERS[0])}"
        ) from None
    if not questions:
        raise BuildError(f"{path}: no puzzle rows after the header")
    return _tokenise(path, cells, questions, answers, ratings, lines, question_chars, answer_chars)


def _read_rows(
    path: Path, cells: int, questions: list[str], answers: list[str], ratings: list[float], lines: list[int]
) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) not in HEADERS:
            raise BuildError(
                f"{path}: line 1: header {header}, expected '{','.join(HEADERS[0])}' (or 'source,q,a,rating')"
            )
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 4:
                raise BuildError(f"{path}: line {line}: {len(row)} columns, expected 4 (source,question,answer,rating)")
            _, q, a, r = row
            for name, text in (("question", q), ("answer", a)):
                if len(text) != cells:
                    raise BuildError(f"{path}: line {line}: {name} has {len(text)} characters, expected {cells}")
            try:
                ratings.append(float(r))
            except ValueError:
                raise BuildError(f"{path}: line {line}: rating '{r}' is not a number") from None
            questions.append(q)
            answers.append(a)
            lines.append(line)


def _tokenise(
    path: Path,
    cells: int,
    questions: list[str],
    answers: list[str],
    ratings: list[float],
    lines: list[int],
    question_chars: dict[str, int],
    answer_chars: dict[str, int],
) -> PuzzleTable:
    line_arr = np.array(lines, dtype=np.int64)
    out = []
    for name, texts, chars in (("question", questions, question_chars), ("answer", answers, answer_chars)):
        try:
            raw = np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8).reshape(-1, cells)
        except UnicodeEncodeError:
            raw = None
        tokens = _lookup(chars)[raw] if raw is not None else None
        if tokens is None or (tokens == 255).any():
            i = next(i for i, t in enumerate(texts) if any(c not in chars for c in t))
            bad = next(c for c in texts[i] if c not in chars)
            raise BuildError(
                f"{path}: line {lines[i]}: {name} contains '{bad}', expected only characters {sorted(chars)}"
            )
        out.append(tokens)
    return PuzzleTable(out[0], out[1], np.array(ratings), line_arr, path)


def csv_pair(input_csv: str | None, test_csv: str | None, hf_repo: str) -> tuple[Path, Path]:
    """(train.csv, test.csv): from a folder, from two files, or downloaded from `hf_repo` when none given."""
    if input_csv is None:
        if test_csv is not None:
            raise BuildError("--test-csv needs --input-csv TRAIN_FILE")
        return download_hf_pair(hf_repo)
    src = Path(input_csv)
    if src.is_dir():
        if test_csv is not None:
            raise BuildError("--test-csv is only for --input-csv FILE; a folder must hold train.csv and test.csv")
        return src / "train.csv", src / "test.csv"
    if test_csv is None:
        raise BuildError(
            f"--input-csv {src} is a file (or missing); give the test file with --test-csv, or "
            f"point --input-csv at a folder holding train.csv and test.csv"
        )
    return src, Path(test_csv)


def download_hf_pair(repo: str) -> tuple[Path, Path]:
    """Fetch train.csv/test.csv of a Hugging Face dataset (needs network; never used in tests)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise BuildError(
            f"downloading {repo} needs the huggingface_hub package (pip install "
            f"huggingface_hub); offline, pass --input-csv with local CSVs or --generate N"
        ) from None
    try:
        paths = [Path(hf_hub_download(repo, f"{split}.csv", repo_type="dataset")) for split in ("train", "test")]
    except Exception as e:  # the hub raises many network/HTTP types; all mean "could not fetch"
        raise BuildError(
            f"could not download {repo} ({type(e).__name__}: {e}); offline, pass --input-csv "
            f"with local CSVs or --generate N"
        ) from None
    return paths[0], paths[1]
