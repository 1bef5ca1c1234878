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


def readme_commands() -> list[list[str]]:
    """Every `hf-dis ...` and `accelerate launch ... examples/*.py ...` command of the README, continuation lines
    joined and comments dropped, split into words."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and (words[0] == "hf-dis" or words[:2] == ["accelerate", "launch"]):
                commands.append(words)
    return commands


def test_readme_recipe_commands_parse(tmp_path, monkeypatch):
    """Each recipe command in the README names real options (a renamed flag fails here, not on a user's machine)."""
    import importlib

    from hf_dis.cli import RECIPE_MODULES

    recipes = {
        command: importlib.import_module(f"hf_dis.recipes.{module}") for command, module in RECIPE_MODULES.items()
    }
    recipes.update({f"{module}.py": recipes[command] for command, module in RECIPE_MODULES.items()})  # examples/*.py
    monkeypatch.chdir(tmp_path)  # output directories land here
    commands = readme_commands()
    seen = set()
    for words in commands:
        if words[0] == "hf-dis" and words[1] in ("card", "push"):
            continue  # tests/test_hub.py runs these
        if words[0] == "hf-dis":
            name = " ".join(words[1:3]) if words[1] == "distill" else words[1]
            options = words[3:] if words[1] == "distill" else words[2:]
        else:
            script = next(word for word in words if word.startswith("examples/") and word.endswith(".py"))
            name, options = Path(script).name, words[words.index(script) + 1 :]
            if name not in recipes:  # examples/distil_timm.py: checked by tests/test_examples.py
                continue
        options = [word for word in options if word != "..."]
        recipes[name].parse_args(options)
        seen.add(recipes[name].__name__)
    assert len(seen) == len(RECIPE_MODULES) and len(commands) >= 16
