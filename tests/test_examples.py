import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("sampler,scope", [("dis", "batch"), ("ftis", "per_example"), ("full", "batch")])
def test_sampled_kd_step_example_runs(sampler, scope):
    result = run_script(
        "examples/sampled_kd_step.py", "--steps", "3", "--num-classes", "200", "--sampler", sampler, "--scope", scope
    )
    losses = [
        float(line.split("loss ")[1].split()[0]) for line in result.stdout.splitlines() if line.startswith("step")
    ]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    if sampler == "dis":
        assert "(full-KD probe)" in result.stdout and "'num_updates': 2" in result.stdout


def test_estimator_bias_benchmark_smoke(tmp_path):
    import json

    run_script("benchmarks/estimator_bias.py", "--cases", "small", "--repeats", "20", "--out", str(tmp_path))
    lines = (tmp_path / "estimator_bias.jsonl").read_text().splitlines()
    assert "meta" in json.loads(lines[0])
    rows = [json.loads(line) for line in lines[1:]]
    assert len(rows) == 2 * 5 * 4 and all(r["relative_error"] >= 0 for r in rows)
    assert (tmp_path / "estimator_bias.png").stat().st_size > 0
    assert "| self_normalized | dis |" in (tmp_path / "estimator_bias.md").read_text()
