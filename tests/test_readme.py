import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "guide.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
GUIDE_PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE, re.S)


def test_ci_runs_the_readme_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv && ")
    assert f"\n{command}\n" in README


def test_readme_trainer_example_runs(tmp_path, monkeypatch):
    """The README's first example, as written, on the 200-class glyph task cut to 64 images per split, with a tiny
    teacher saved where the README's `hf-dis train-teacher` command puts it, and two steps instead of three epochs."""
    import datasets
    from tiny_models import timm_model

    import hf_dis.data
    from hf_dis.models import wrap_timm_model

    code = PYTHON_BLOCKS[0]
    assert code.count("load_glyphs(num_classes=200)") == 1 and code.count("num_train_epochs=3") == 1
    task = hf_dis.data.load_glyphs(num_classes=200)
    cut = datasets.DatasetDict({split: rows.select(range(64)) for split, rows in task.items()})
    monkeypatch.setattr(hf_dis.data, "load_glyphs", lambda num_classes: cut if num_classes == 200 else None)
    monkeypatch.chdir(tmp_path)
    teacher = wrap_timm_model(timm_model("test_resnet", num_classes=200, seed=1))
    teacher.config.id2label = dict(enumerate(task["train"].features["label"].names))
    teacher.save_pretrained("runs/glyph-teacher")
    namespace: dict = {}
    exec(compile(code.replace("num_train_epochs=3", "max_steps=2, use_cpu=True"), "README.md", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
    assert (tmp_path / "runs" / "glyph-student" / "README.md").is_file()


def test_guide_trainer_script_is_the_example_script():
    """The user guide shows examples/distil_timm.py verbatim (tests/test_examples.py runs the script)."""
    script = (ROOT / "examples" / "distil_timm.py").read_text()
    assert GUIDE_PYTHON_BLOCKS[0] == script[script.index("from dataclasses import dataclass") :]


def test_guide_sampled_loss_snippet_runs():
    code = next(block for block in GUIDE_PYTHON_BLOCKS if "hf_dis.build_sampler" in block)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    parts, features = namespace["parts"], namespace["features"]
    assert parts.loss.ndim == 0 and parts.loss.item() > 0 and features.grad is not None


def readme_commands() -> list[list[str]]:
    """Every `hf-dis ...` and `accelerate launch ... examples/*.py ...` command of the README and the user guide,
    continuation lines joined and comments dropped, split into words."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README + GUIDE, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and (words[0] == "hf-dis" or words[:2] == ["accelerate", "launch"]):
                commands.append(words)
    return commands


def test_readme_recipe_commands_parse(tmp_path, monkeypatch):
    """Each recipe command in the README and the guide names real options (a renamed flag fails here, not on a
    user's machine)."""
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
