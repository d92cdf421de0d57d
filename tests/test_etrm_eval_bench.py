"""bench/etrm_eval.py end to end at toy width: the held-out evaluation timed and counted apart from the
encoder probes, and the FLOP estimate's arithmetic."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_etrm_eval_bench_counts_the_heldout_work_apart_from_the_probes() -> None:
    steps, aug = 2, 0
    cmd = [sys.executable, str(ROOT / "bench" / "etrm_eval.py"), "--hidden", "32", "--num-aug", str(aug)]
    cmd += ["--halt-max-steps", str(steps), "--eval-batch", "64", "--flops", "--tflops", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    queries, heldout_s, probe_s = re.search(
        r"(\d+) held-out queries \(32 tasks x 1 variants\) in ([\d.]+) s .* then the encoder probes ([\d.]+) s", text
    ).groups()
    total = re.search(r"32 held-out task groups with 0 augmentations in (\d+) s", text).group(1)
    assert int(queries) > 32 and float(heldout_s) > 0 and float(probe_s) > 0
    assert abs(float(heldout_s) + float(probe_s) - int(total)) <= 1.0
    m = re.search(
        r"counted ([\d.]+) TFLOP for the held-out queries \(probes ([\d.]+)\): ([\d.]+) GFLOP per query and ACT "
        r"step; 1000 augmentations x 16 ACT steps = ([\d.]+) PFLOP, ([\d.]+) min at 100 TFLOP/s",
        text,
    )
    assert m, text
    tflop, probes, per_step, pflop, minutes = map(float, m.groups())
    assert tflop > 0 and probes > 0
    # the probes run every ACT step on 64 training tasks: they are not part of the held-out figure
    assert per_step == pytest.approx(tflop * 1e3 / (int(queries) * steps), rel=0.06, abs=0.06)
    assert pflop == pytest.approx(per_step * 1e-6 * int(queries) * 1001 * 16, rel=0.06, abs=0.06)
    assert minutes == pytest.approx(pflop * 1e3 / 100 / 60, rel=0.06, abs=0.06)
