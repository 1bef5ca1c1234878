import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv && ")
    assert f"\n{command}\n" in README


def test_readme_trainer_quickstart_is_the_example_script():
    """The README shows examples/distil_timm.py verbatim (tests/test_examples.py runs the script)."""
    script = (ROOT / "examples" / "distil_timm.py").read_text()
    assert PYTHON_BLOCKS[0] == script[script.index("from dataclasses import dataclass") :]


def test_readme_sampled_loss_snippet_runs():
    code = next(block for block in PYTHON_BLOCKS if "hf_dis.build_sampler" in block)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    parts, features = namespace["parts"], namespace["features"]
    assert parts.loss.ndim == 0 and parts.loss.item() > 0 and features.grad is not None
