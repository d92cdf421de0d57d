"""trm/fields.py: the one YAML-to-dataclass validator behind the config tree, profiles and resources."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from trm.config import ConfigError, load_config
from trm.fields import Mismatch, coerce, describe, positive_number
from trm.hpc.profile import LOCAL, ProfileError, profile_from_dict
from trm.hpc.spec import SpecError, check_resource

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("value", "tp", "kwargs", "out"),
    [
        ("4", int, {"from_text": True}, 4),
        ("1_000", int, {}, 1000),
        (2.0, int, {}, 2),
        ("1e-4", float, {}, 1e-4),
        (3, float, {"strict": True}, 3.0),
        ("on", bool, {}, True),
        ("NO", bool, {}, False),
        ("ROPE", Literal["rope", "none"], {}, "rope"),
        ("[a, b]", list[str], {"from_text": True}, ["a", "b"]),
        ("a", list[str], {"from_text": True}, ["a"]),
        (["cuda/12.1", 12.1], tuple[str, ...], {"strict": True}, ("cuda/12.1", "12.1")),
        (0, int, {"strict": True, "low": 0}, 0),
    ],
)
def test_values_that_fit(value, tp, kwargs, out) -> None:  # noqa: ANN001
    assert coerce(value, tp, **kwargs) == out


@pytest.mark.parametrize(
    ("value", "tp", "kwargs", "expected"),
    [
        ("1.5", int, {"from_text": True}, "int"),
        (True, int, {}, "int"),
        ("4", int, {"strict": True}, "an integer"),
        (2.0, int, {"strict": True}, "an integer"),
        (0, int, {"strict": True, "low": 1}, "an integer >= 1"),
        ("yes", bool, {"strict": True}, "true or false"),
        (3, str, {"strict": True}, "a string"),
        ("x", float, {"strict": True}, "a number"),
        ("ROPE", Literal["rope", "none"], {"strict": True}, "one of rope, none"),
        ("a", tuple[str, ...], {"strict": True}, "a list of strings"),
        (["a", True], tuple[str, ...], {"strict": True}, "a list of strings (item 1: True is not a string)"),
        ([1, "x"], list[int], {}, "a list of int (item 1: 'x' is not int)"),
    ],
)
def test_values_that_do_not_fit_say_what_the_field_takes(value, tp, kwargs, expected) -> None:  # noqa: ANN001
    with pytest.raises(Mismatch) as e:
        coerce(value, tp, **kwargs)
    assert e.value.expected == expected


def test_positive_numbers_and_descriptions() -> None:
    assert positive_number(2) == 2.0
    for bad in (0, -1.0, float("inf"), float("nan"), True, "3"):
        with pytest.raises(Mismatch, match="a positive number"):
            positive_number(bad)
    assert describe(list[int]) == "a list of int" and describe(int, strict=True, low=0) == "an integer >= 0"


def test_each_layer_names_its_file_key_and_what_it_takes(tmp_path: Path) -> None:
    # Config, profile and resources: one validator, so one message shape: where, key, what, got.
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch:\n  hidden_size: wide\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(e.value) == f"{bad}: arch.hidden_size: expected int, got 'wide'"
    with pytest.raises(ProfileError) as e:
        profile_from_dict({"scheduler": "slurm", "array_parallelism": 0}, "env/c.yaml")
    assert str(e.value) == "env/c.yaml: array_parallelism must be an integer >= 1, got 0"
    with pytest.raises(ProfileError) as e:
        profile_from_dict({"scheduler": "slurm", "modules": "cuda"}, "env/c.yaml")
    assert str(e.value) == "env/c.yaml: modules must be a list of strings, got 'cuda'"
    with pytest.raises(SpecError) as e:
        check_resource("nodes", 1.5, "jobs/s.yaml: resources", LOCAL)
    assert str(e.value) == "jobs/s.yaml: resources: nodes must be an integer >= 1, got 1.5"
