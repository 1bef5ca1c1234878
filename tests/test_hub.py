"""Hub-ready students: saved folders load with AutoModelForImageClassification and predict what the trained student
predicted (timm, transformers and re-ID students, the last also without hf_dis); the card renders, parses and states
the run's settings; pushes reach a stand-in Hub through the real client, and bad pushes fail clearly and early."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from hub_server import StandInHub
from huggingface_hub import ModelCard
from tiny_models import RandomImages, tiny_hf
from transformers import AutoModelForImageClassification

from hf_dis import DistillationArguments, DistillationTrainer, ReIDModel
from hf_dis.hub import CARD_DATA_NAME, StudentCardData, push_student, render_card, write_card
from hf_dis.metrics import classification_metrics

ROOT = Path(__file__).resolve().parents[1]


def distil(tmp_path: Path, student: torch.nn.Module, teacher: torch.nn.Module, **overrides) -> DistillationTrainer:
    options = dict(output_dir=str(tmp_path / "student"), max_steps=3, per_device_train_batch_size=8, sampler="dis",
                   num_sampled=5,
                   dis_refit_every=2, learning_rate=0.05, save_strategy="no", report_to="none", use_cpu=True,
                   disable_tqdm=True, seed=0)  # fmt: skip
    trainer = DistillationTrainer(
        model=student,
        args=DistillationArguments(**{**options, **overrides}),
        teacher=teacher,
        train_dataset=RandomImages(24),
        eval_dataset=RandomImages(10, seed=1),
        compute_metrics=classification_metrics,
    )
    trainer.train()
    trainer.evaluate()
    trainer.create_model_card(dataset="random-images", license="apache-2.0")
    trainer.save_model()
    return trainer


@pytest.fixture
def timm_run(tmp_path):
    torch.manual_seed(0)
    student = timm.create_model("test_resnet", num_classes=20)  # a plain timm model, as users build them
    return distil(tmp_path, student, timm.create_model("test_convnext", num_classes=20))


def same_predictions(loaded: torch.nn.Module, trained: torch.nn.Module) -> bool:
    """Same weights bit for bit, and the same logits bit for bit. The loaded tensors are copied first: tensors
    loaded from safetensors sit in storage whose alignment can make the CPU convolution take another kernel, which
    changes the last bit of some logits (1e-6) though the weights are identical."""
    loaded_state, trained_state = loaded.state_dict(), trained.state_dict()
    if loaded_state.keys() != trained_state.keys():
        return False
    if not all(torch.equal(loaded_state[name], trained_state[name]) for name in trained_state):
        return False
    with torch.no_grad():
        for tensor in [*loaded.parameters(), *loaded.buffers()]:
            tensor.data = tensor.data.clone()
        pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        return torch.equal(loaded.eval()(pixels).logits, trained.eval()(pixels).logits)


def test_timm_student_folder_loads_and_predicts_the_same(timm_run):
    loaded = AutoModelForImageClassification.from_pretrained(timm_run.args.output_dir)
    assert type(loaded).__name__ == "TimmWrapperForImageClassification"
    assert same_predictions(loaded, timm_run.model)


def test_transformers_student_folder_loads_and_predicts_the_same(tmp_path):
    trainer = distil(tmp_path, tiny_hf("resnet", num_labels=20), tiny_hf("convnext", num_labels=20))
    loaded = AutoModelForImageClassification.from_pretrained(trainer.args.output_dir)
    assert same_predictions(loaded, trainer.model)


def test_card_renders_parses_and_states_the_run(timm_run):
    folder = Path(timm_run.args.output_dir)
    card = ModelCard.load(folder / "README.md")
    data = json.loads((folder / CARD_DATA_NAME).read_text())
    assert {"knowledge-distillation", "image-classification"} <= set(card.data.tags)
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    evaluation = next(entry for entry in reversed(timm_run.state.log_history) if "eval_accuracy" in entry)
    assert results["accuracy"] == pytest.approx(evaluation["eval_accuracy"], abs=1e-6)
    assert results["top_5_accuracy"] == pytest.approx(evaluation["eval_top5"], abs=1e-6)
    text = card.text
    for row in ("| sampler | dis |", "| classes per step (K) | 5 |", "| sample scope | per_example |",
                "| temperature (T) | 2.0 |", "| alpha (hard-label CE weight) | 0.1 |", "| KD weight | 0.9 |",
                "| optimizer steps | 3 |", "| refit every (optimizer steps) | 2 |",
                "| classifier updates | with the other parameters |"):  # fmt: skip
        assert row in text, row
    mixture = timm_run.sampler.summary()
    assert f"| 1 | {mixture['weight_1']:.4f} | {mixture['loc_1']:.1f} |" in text  # the DIS mixture at the end
    assert "test_convnext (timm)" in text and "test_resnet (timm)" in text
    assert "arXiv:1812.00914" in text and data["speed"]["head step, sampled (ms)"] > 0
    # The card is re-rendered from its data alone (hf-dis card), identically.
    before = (folder / "README.md").read_text()
    write_card(folder, repo_id=None)
    assert (folder / "README.md").read_text() == before


def test_card_keywords_are_honoured_or_refused(timm_run):
    """The Trainer's create_model_card keywords: tags (push_to_hub passes the model's model_tags) and language reach
    the metadata; the ones the card cannot state are refused, naming them, and leave the card as it was."""
    folder = Path(timm_run.args.output_dir)
    timm_run.create_model_card(tags="my-tag", language="en")
    card = ModelCard.load(folder / "README.md")
    assert "my-tag" in card.data.tags and "knowledge-distillation" in card.data.tags and card.data.language == "en"
    assert card.data.license == "apache-2.0"  # given to an earlier call: kept
    before = (folder / "README.md").read_text()
    for keywords, named in (({"finetuned_from": "x/y"}, "finetuned_from"), ({"tasks": "t", "dataset_args": "a"},
                            "tasks, dataset_args"), ({"dataset": ["a", "b"]}, "one dataset")):  # fmt: skip
        with pytest.raises(ValueError, match=named):
            timm_run.create_model_card(**keywords)
    assert (folder / "README.md").read_text() == before


def test_card_usage_snippets_run(timm_run, tmp_path):
    """The card's snippets, on the saved folder: the pipeline (with the image processor saved beside the student),
    the model itself, and timm alone (the download replaced by the local file), which gets the trained weights."""
    from PIL import Image

    folder = Path(timm_run.args.output_dir)
    Image.new("RGB", (40, 40), (200, 30, 90)).save(tmp_path / "image.png")
    snippets = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    assert len(snippets) == 3 and "pipeline(" in snippets[0] and "timm.create_model" in snippets[2]
    namespaces = []
    for snippet in snippets:
        weights = repr(str(folder / "model.safetensors"))
        code = snippet.replace('hf_hub_download("<user>/student", "model.safetensors")', weights)
        code = code.replace("<user>/student", str(folder)).replace('"image.png"', repr(str(tmp_path / "image.png")))
        namespaces.append({})
        exec(code, namespaces[-1])
    assert namespaces[1]["predicted"].shape == (1,)
    trained = timm_run.accelerator.unwrap_model(timm_run.model).timm_model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in namespaces[2]["model"].state_dict().items())


def test_reid_student_loads_without_hf_dis_and_its_card_snippet_runs(tmp_path):
    """The re-ID folder carries its model code: transformers alone loads it (trust_remote_code), and the card's
    snippet gives the retrieval embedding."""
    from test_reid import _reid_data

    from hf_dis import ReIDDistillationArguments, ReIDDistillationTrainer

    train, evaluation = _reid_data()
    args = ReIDDistillationArguments(output_dir=str(tmp_path / "reid"), per_device_train_batch_size=8,
                                     instances_per_identity=2, max_steps=2, sampler="dis", num_sampled=3,
                                     report_to="none",
                                     use_cpu=True, save_strategy="no", disable_tqdm=True)  # fmt: skip
    trainer = ReIDDistillationTrainer(
        model=ReIDModel.from_backbone("test_resnet", 8, seed=0),
        args=args,
        teacher=ReIDModel.from_backbone("test_resnet", 8, seed=1),
        train_dataset=train,
        eval_dataset=evaluation,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.create_model_card(dataset="synthetic identities")
    trainer.save_model()
    folder = Path(args.output_dir)
    card = (folder / "README.md").read_text()
    assert f"| student: test_resnet (timm) + BNNeck | {sum(p.numel() for p in trainer.model.parameters()):,} |" in card
    assert f"{100 * metrics['eval_mAP']:.2f}%" in card and "| images per identity (K) | 2 |" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("<user>/reid", str(folder))
    (tmp_path / "snippet.py").write_text(
        "import sys\nsys.modules['hf_dis'] = None  # as on a machine without hf_dis\n"
        + snippet
        + "\nprint(type(model).__module__, tuple(distances.shape))\n"
    )
    result = subprocess.run(
        [sys.executable, str(tmp_path / "snippet.py")], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    module, shape = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert module.startswith("transformers_modules.") and shape == "(1, 8)"  # the folder's own code, not hf_dis


# --- pushing -----------------------------------------------------------------------------------------------------


def hf_dis_push(folder: Path, repo_id: str, hub: StandInHub, token: str | None = "hf_test"):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(folder.parent / "hf_home")}  # fmt: skip
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "hf_dis.cli", "push", str(folder), "--repo-id", repo_id],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800,
    )  # fmt: skip


def test_hf_dis_push_uploads_the_student_in_one_commit(timm_run):
    folder = Path(timm_run.args.output_dir)
    (folder / "checkpoint-3").mkdir()
    (folder / "checkpoint-3" / "optimizer.pt").write_bytes(b"large")  # never uploaded
    with StandInHub() as hub:
        result = hf_dis_push(folder, "tester/tiny-student", hub)
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.repos["tester/tiny-student"]
    assert {"config.json", "model.safetensors", "README.md", "training_args.bin", CARD_DATA_NAME} <= set(files)
    assert not any(name.startswith("checkpoint-") for name in files)
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert 'from_pretrained("tester/tiny-student")' in files["README.md"].decode()  # the card names the repo
    assert sum(path.endswith("/commit/main") for _, path in hub.requests) == 1
    assert "pushed to" in result.stdout


def test_trainer_push_to_hub_sends_the_distillation_card(tmp_path):
    with StandInHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test",
               "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home")}  # fmt: skip
        result = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "scripts" / "trainer_push.py"), str(tmp_path / "out"), "tester/tp"],
            capture_output=True, text=True, env=env, timeout=1800,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    files = hub.repos["tester/tp"]
    assert {"config.json", "model.safetensors", "README.md", "training_args.bin", CARD_DATA_NAME} <= set(files)
    card = files["README.md"].decode()
    assert "generated_from_trainer" not in card and "It was distilled from" in card and "license: apache-2.0" in card


def test_push_errors_are_clear_and_upload_nothing(timm_run, tmp_path):
    folder = Path(timm_run.args.output_dir)
    with StandInHub(fail_commits=True) as hub:
        result = hf_dis_push(folder, "tester/refused", hub)
    assert (
        result.returncode == 1
        and result.stderr.startswith("hf-dis push: pushing")
        and "commit refused" in result.stderr
    )
    with StandInHub() as hub:
        result = hf_dis_push(folder, "tester/no-token", hub, token=None)
    assert result.returncode == 1 and "Invalid credentials" in result.stderr and "hf auth login" in result.stderr
    assert not hub.repos.get("tester/no-token")
    # Checked before any request: a folder without a model, or without card data.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        push_student(empty, "tester/x")
    (folder / CARD_DATA_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="was not written by a DistillationTrainer"):
        push_student(folder, "tester/x")


def test_card_data_round_trips_and_checks_its_task(tmp_path):
    data = StudentCardData(
        task="image-classification", model_name="m", student={"architecture": "a", "parameters": 10, "classes": 3},
        teacher={"name": "t", "architecture": "b", "parameters": 20}, distillation={"sampler": "full"},
        training={"learning rate": 0.1}, results={"accuracy": 0.5},
    )  # fmt: skip
    data.save(tmp_path)
    assert StudentCardData.load(tmp_path) == data
    assert "| student: a | 10 | 50.00% | - |" in render_card(data).text
    with pytest.raises(ValueError, match="task must be one of"):
        StudentCardData(**{**data.__dict__, "task": "segmentation"})


@pytest.mark.parametrize("name", ["glyphs-classification-student", "glyphs-reid-student"])
def test_committed_example_cards_are_what_the_templates_render(name):
    """model_cards/examples/*.md are the cards of real runs (their data beside them): re-render them after a
    template change (python -c "..." in model_cards/README.md)."""
    folder = ROOT / "model_cards" / "examples"
    data = StudentCardData(**json.loads((folder / f"{name}.json").read_text()))
    assert str(render_card(data)) == (folder / f"{name}.md").read_text()


def test_push_with_the_network_down_is_one_clear_error(timm_run, monkeypatch):
    """No server at the endpoint (a network that is down): a ConnectionError naming the endpoint, not a traceback
    from the HTTP library."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ConnectionError, match="on http://127.0.0.1:9 failed: .* Check the network and the endpoint"):
        push_student(Path(timm_run.args.output_dir), "tester/unreachable", token="hf_test")
