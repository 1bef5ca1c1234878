"""The recipes and the `hf-dis` command: defaults, option parsing (flags and YAML), the schedule, and every recipe end
to end on small glyph tasks and on a Market-1501 fixture in the release's format, one of them under
`accelerate launch` with two processes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from tiny_models import write_market_release
from transformers import AutoConfig, TrainingArguments

from hf_dis.data import IdentitySampler
from hf_dis.recipes import distill_cifar100, distill_market1501, evaluate, render_glyphs, train_teacher
from hf_dis.recipes.optimization import steps_per_epoch, warmup_multistep_schedule

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--report_to", "none", "--use_cpu", "true", "--save_strategy", "no", "--disable_tqdm", "true"]


def hf_dis_command(*args: str, cache: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """`hf-dis ARGS` in a fresh process (through `python -m hf_dis.cli`, or `launcher` + the examples' script path)."""
    command = launcher or [sys.executable, "-m", "hf_dis.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DIS_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def results(folder: Path, split: str = "eval") -> dict:
    return json.loads((folder / f"{split}_results.json").read_text())


# --- options -----------------------------------------------------------------------------------------------------


def test_recipe_defaults_are_the_papers(tmp_path):
    _, _, cifar = distill_cifar100.parse_args(["--output_dir", str(tmp_path)])
    assert (cifar.num_train_epochs, cifar.per_device_train_batch_size, cifar.learning_rate) == (240, 64, 0.05)
    assert (cifar.weight_decay, cifar.momentum, cifar.lr_milestones, cifar.lr_gamma) == (
        5e-4,
        0.9,
        [150, 180, 210],
        0.1,
    )
    assert (cifar.temperature, cifar.alpha, cifar.recipe_optimizer, cifar.sampler) == (4.0, 0.1, "sgd", "auto")
    _, _, bot = distill_market1501.parse_args(["--output_dir", str(tmp_path)])
    assert (bot.num_train_epochs, bot.learning_rate, bot.weight_decay, bot.recipe_optimizer) == (
        120,
        3.5e-4,
        5e-4,
        "adam",
    )
    assert (bot.per_device_train_batch_size, bot.instances_per_identity, bot.triplet_margin) == (64, 4, 0.3)
    assert (bot.warmup_epochs, bot.warmup_start_factor, bot.lr_milestones) == (10, 0.1, [40, 70])
    assert (bot.label_smoothing_factor, bot.temperature, bot.alpha, bot.embedding_kd_weight) == (0.1, 4.0, 0.9, 3000)
    # the training-arguments class follows the task
    _, _, reid = train_teacher.parse_args(["--task", "reid", "--output_dir", str(tmp_path)])
    assert isinstance(reid, train_teacher.ReIDTeacherArguments) and reid.learning_rate == 3.5e-4


def test_yaml_config_equals_flags(tmp_path):
    flags = ["--dataset", "glyphs", "--glyph_classes", "12", "--student", "test_resnet", "--output_dir",
             str(tmp_path), "--teacher_model", "t", "--lr_milestones", "1", "2", "--sampler", "ftis",
             "--num_sampled", "3"]  # fmt: skip
    config = {"dataset": "glyphs", "glyph_classes": 12, "student": "test_resnet", "output_dir": str(tmp_path),
              "teacher_model": "t", "lr_milestones": [1, 2], "sampler": "ftis", "num_sampled": 3}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    from_flags = distill_cifar100.parse_args(flags)
    from_yaml = distill_cifar100.parse_args([str(tmp_path / "recipe.yaml")])
    assert from_flags[:2] == from_yaml[:2]
    assert from_flags[2].to_dict() == from_yaml[2].to_dict()
    with pytest.raises(ValueError, match="dataset must be one of"):
        train_teacher.DataArguments(dataset="market1501").check("classification")
    with pytest.raises(ValueError, match="pass --data_dir"):
        train_teacher.DataArguments(dataset="market1501").check("reid")
    with pytest.raises(ValueError, match="set warmup_epochs instead"):
        distill_cifar100.parse_args([*flags, "--warmup_steps", "5"])
    with pytest.raises(ValueError, match="set recipe_optimizer instead"):
        distill_cifar100.parse_args([*flags, "--optim", "adamw_torch"])
    with pytest.raises(ValueError, match="set lr_milestones instead"):
        distill_cifar100.parse_args([*flags, "--lr_scheduler_type", "cosine"])


def test_evaluation_sets_are_a_fixed_subset_and_the_whole_split():
    from hf_dis.recipes.data import DataArguments, evaluation_sets

    test = datasets.Dataset.from_dict({"label": list(range(50))})
    during, final = evaluation_sets(test, DataArguments(eval_subset=10))
    again, _ = evaluation_sets(test, DataArguments(eval_subset=10))
    assert len(during) == 10 and final is test and during["label"] == again["label"]  # the same subset each time
    assert evaluation_sets(test, DataArguments()) == (test, test)
    with pytest.raises(ValueError, match="eval_subset must be >= 1"):
        evaluation_sets(test, DataArguments(eval_subset=0))


def test_evaluate_names_the_option_when_the_model_cannot_be_loaded():
    with pytest.raises(OSError, match="unreachable here.*pass that local directory as --model"):
        evaluate.main(["--model", "nobody/no-such-model", "--dataset", "glyphs"])
    with pytest.raises(OSError, match=r"there is no local directory .*runs/no-such-student\.$"):  # a path, not a Hub id
        evaluate.main(["--model", "runs/no-such-student/", "--dataset", "glyphs"])
    with pytest.raises(OSError, match=r"(?s)no local directory .*runs/student, and as a Hub id .*unreachable here"):
        evaluate.main(["--model", "runs/student", "--dataset", "glyphs"])  # either: both are said


def test_warmup_multistep_schedule_factors():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_multistep_schedule(optimizer, 10, [3, 5], gamma=0.1, warmup_epochs=1, warmup_start_factor=0.1)
    rates = []
    for _ in range(60):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[5] == pytest.approx(0.55) and rates[10] == 1.0
    assert rates[29] == 1.0 and rates[30] == pytest.approx(0.1) and rates[50] == pytest.approx(0.01)


def test_steps_per_epoch_matches_the_loaders(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to=[], use_cpu=True)
    assert steps_per_epoch(30, args) == len(torch.utils.data.DataLoader(range(30), batch_size=8)) == 4
    labels = np.repeat(np.arange(10), 3)  # 30 images, P x K = 4 x 2
    assert steps_per_epoch(30, args, partial_last_batch=False) == IdentitySampler(labels, 2, 4).num_steps == 3
    args.gradient_accumulation_steps = 2
    assert steps_per_epoch(30, args) == 2


def test_cli_help_and_errors(capsys, monkeypatch):
    from hf_dis import cli

    entry_point = Path(sys.executable).with_name("hf-dis")  # installed by pyproject's [project.scripts]
    assert entry_point.is_file(), "the package is not installed in this environment (pip install -e .)"
    result = subprocess.run([str(entry_point), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for command in ("train-teacher", "distill cifar100", "distill market1501", "evaluate"):
        assert command in result.stdout
    # the subcommands in this process: each one's own process would only add its start-up
    monkeypatch.setattr(sys, "argv", ["hf-dis"])  # main names the program there
    assert cli.main(["distill"]) == 2 and "distill needs a recipe" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["distill", "cifar100", "--help"])
    out = capsys.readouterr().out
    assert exit_status.value.code == 0 and "usage: hf-dis distill cifar100" in out
    assert "--teacher_model" in out and "--glyph_classes" in out
    # the recipe's options and the Trainer's common ones; --help-all adds the rest; refused options never
    assert "--learning_rate" in out and "--adam_beta1" not in out and "--help-all lists every option" in out
    with pytest.raises(SystemExit):
        cli.main(["distill", "cifar100", "--help-all"])
    every = capsys.readouterr().out
    assert "--adam_beta1" in every and len(every.splitlines()) > len(out.splitlines())
    assert not re.search(r"--optim[\s\]{]|--lr_scheduler_type", out + every)

    with pytest.raises(SystemExit) as exit_status:  # --help before the required --model is checked
        cli.main(["evaluate", "--help"])
    assert exit_status.value.code == 0 and "--model" in capsys.readouterr().out
    # a user's mistake: one line naming it, no traceback (HF_DIS_DEBUG=1 raises it)
    assert cli.main(["evaluate", "--dataset", "glyphs"]) == 1
    err = capsys.readouterr().err
    assert "hf-dis evaluate: error: pass the model to evaluate: --model DIRECTORY" in err and "Traceback" not in err
    monkeypatch.setenv("HF_DIS_DEBUG", "1")
    with pytest.raises(ValueError, match="pass the model to evaluate"):
        cli.main(["evaluate", "--dataset", "glyphs"])


def test_evaluate_a_student_on_your_own_image_folder(tmp_path):
    """`hf-dis evaluate --dataset FOLDER`: an image folder (no train/test split: a tenth of it, seeded) is evaluated
    as the named datasets are; a folder without the recipes' columns is refused naming them."""
    import transformers
    from PIL import Image

    from hf_dis.data import load_image_dataset

    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "fox"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "images" / label / f"{index}.png"
            )
    config = transformers.TimmWrapperConfig(architecture="test_resnet", num_labels=3)
    transformers.TimmWrapperForImageClassification(config).save_pretrained(tmp_path / "model")
    splits = load_image_dataset(str(tmp_path / "images"))
    assert (len(splits["train"]), len(splits["test"])) == (27, 3) and sorted(splits["test"]["label"]) == [0, 1, 2]
    metrics = evaluate.main(["--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "images")])
    assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["eval_top5"] == 1.0  # 3 classes: all in the top 5
    splits["train"].rename_column("label", "kind").save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"the recipes read 'image' and 'label' \(missing: \['label'\]\)"):
        evaluate.main(["--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "saved")])
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_dataset(str(tmp_path / "nowhere"))


def test_a_rendered_glyph_task_is_read_back_where_the_fonts_are_not(tmp_path, monkeypatch):
    """hf-dis render-glyphs saves the task; --data_dir reads exactly it back (no fonts needed: nothing is rendered)."""
    from hf_dis.recipes.data import DataArguments, load_splits

    monkeypatch.setenv("HF_DIS_CACHE", str(tmp_path / "cache"))
    task = tmp_path / "task"
    result = hf_dis_command(
        "render-glyphs", "--glyph_classes", "12", "--output_dir", str(task), cache=tmp_path / "cache"
    )
    assert re.search(r"saved a classification glyph task to .*: 12 training classes; train [\d,]+, test", result.stdout)
    rendered = load_splits(DataArguments(glyph_classes=12), "classification")
    monkeypatch.setattr("hf_dis.recipes.data.load_glyphs", lambda *a, **k: pytest.fail("rendered instead of loaded"))
    saved = load_splits(DataArguments(data_dir=str(task)), "classification")
    for split in ("train", "test"):
        assert saved[split]["label"] == rendered[split]["label"]
        assert saved[split][0]["image"].tobytes() == rendered[split][0]["image"].tobytes()
    assert DataArguments(data_dir=str(task)).name("classification") == "hf_dis glyphs (classification, saved task task)"
    with pytest.raises(ValueError, match=r"\['glyph_classes'\] choose how glyphs are rendered"):
        load_splits(DataArguments(data_dir=str(task), glyph_classes=12), "classification")
    rendering = {"glyph_families": ["DejaVu Sans"], "glyph_copies": 1, "glyph_image_size": 64}
    with pytest.raises(ValueError, match=r"\['glyph_copies', 'glyph_families', 'glyph_image_size'\] choose how"):
        load_splits(DataArguments(data_dir=str(task), **rendering), "classification")
    with pytest.raises(ValueError, match="a reid task has"):
        load_splits(DataArguments(data_dir=str(task)), "reid")
    with pytest.raises(ValueError, match="is not a saved glyph task"):
        load_splits(DataArguments(data_dir=str(tmp_path)), "classification")
    with pytest.raises(ValueError, match="already holds a saved task"):
        render_glyphs.main(["--glyph_classes", "12", "--output_dir", str(task)])


def test_render_glyphs_takes_font_families_and_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DIS_CACHE", str(tmp_path / "cache"))
    families = ["--glyph_classes", "12", "--glyph_families", "DejaVu Sans", "DejaVu Serif"]
    data, _ = render_glyphs.parse_args([*families, "--glyph_copies", "1", "--output_dir", "unused"])
    assert data.glyph_families == ["DejaVu Sans", "DejaVu Serif"] and data.glyph_copies == 1
    one = datasets.load_from_disk(
        str(render_glyphs.main([*families, "--glyph_copies", "1", "--output_dir", str(tmp_path / "one")]))
    )
    two = datasets.load_from_disk(str(render_glyphs.main([*families, "--output_dir", str(tmp_path / "two")])))
    fonts = set(one["train"]["font"]) | set(one["test"]["font"])
    assert fonts and all(name.startswith(("DejaVu Sans", "DejaVu Serif")) for name in fonts)
    assert 2 * one.num_rows["train"] == two.num_rows["train"] > 0  # the default renders each pair twice


# --- end to end --------------------------------------------------------------------------------------------------


def test_classification_chain_on_glyphs(tmp_path, monkeypatch):
    """train-teacher (its head imprinted) -> distill cifar100 (DIS, evaluated every 2 steps on 5 test images, last on
    the whole split) -> evaluate: the evaluation recomputes the distillation's final figures; the run's curve holds
    every evaluation."""
    data = ["--dataset", "glyphs", "--glyph_classes", "16"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    hf_dis_command("train-teacher", *data, "--model", "test_resnet", "--output_dir", str(teacher), "--max_steps", "4",
                   "--per_device_train_batch_size", "16", "--imprint_head", "true", *QUICK,
                   cache=tmp_path / "cache")  # fmt: skip
    assert {"eval_accuracy", "eval_top5"} <= set(results(teacher))
    imprinted = json.loads((teacher / "imprint_results.json").read_text())  # its head set from class means, then saved
    assert imprinted["classes_imprinted"] == 16 and imprinted["scale"] > 0
    assert imprinted["eval_top1_imprinted"] == results(teacher)["eval_accuracy"]  # the head evaluated is the one saved
    assert 0 <= imprinted["eval_top1_trained_head"] <= 1
    distil = ["distill", "cifar100", *data, "--student", "test_resnet", "--teacher_model", str(teacher),
              "--output_dir", str(student), "--max_steps", "4", "--per_device_train_batch_size", "16",
              "--sampler", "dis", "--num_sampled", "4", "--dis_refit_every", "2", "--eval_subset", "5",
              "--eval_strategy", "steps", "--eval_steps", "2", *QUICK]  # fmt: skip
    output = hf_dis_command(*distil, cache=tmp_path / "cache").stdout
    distilled = results(student)
    summary = output[output.index(f"Done: {student}"):]  # the run ends with where it is and what to do next
    assert f"accuracy {100 * distilled['eval_accuracy']:.2f}%" in summary
    assert f"hf-dis evaluate --model {student}" in summary and f"hf-dis push {student} --repo_id" in summary
    curve = json.loads((student / "eval_curve.json").read_text())
    assert [point[2] for point in curve["points"]] == [2, 4, 4]
    assert curve["points"][-1][1] == distilled["eval_accuracy"]
    assert all(point[1] in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) for point in curve["points"][:2])  # 5 images
    assert {"eval_accuracy", "eval_top5", "eval_kd_loss"} <= set(distilled)
    teacher_names, student_names = (AutoConfig.from_pretrained(folder).id2label for folder in (teacher, student))
    assert len(teacher_names) == 16 and teacher_names == student_names  # the glyph task's characters, saved
    assert all(len(name) == 1 for name in teacher_names.values())
    assert results(student, "train")["epoch"] > 0 and (student / "model.safetensors").is_file()
    evaluated = tmp_path / "evaluated"
    hf_dis_command("evaluate", "--model", str(student), *data, "--output_dir", str(evaluated), cache=tmp_path / "cache")
    assert results(evaluated)["eval_accuracy"] == distilled["eval_accuracy"]
    assert results(evaluated)["eval_top5"] == distilled["eval_top5"]

    # cache-teacher -> distill cifar100 --teacher_cache, with no teacher at all
    cached, from_cache = tmp_path / "teacher-cache", tmp_path / "from-cache"
    output = hf_dis_command("cache-teacher", *data, "--teacher_model", str(teacher), "--num_views", "2",
                            "--output_dir", str(cached), cache=tmp_path / "cache").stdout  # fmt: skip
    assert "with the teacher's top 16 logits (2 augmented views each)" in output
    distil_from_cache = ["distill", "cifar100", *data, "--student", "test_resnet", "--teacher_cache", str(cached),
                         "--max_steps", "2", "--per_device_train_batch_size", "16", *QUICK]  # fmt: skip
    hf_dis_command(*distil_from_cache, "--output_dir", str(from_cache), cache=tmp_path / "cache")
    assert {"eval_accuracy", "eval_loss"} <= set(results(from_cache)) and "eval_kd_loss" not in results(from_cache)
    card = (from_cache / "README.md").read_text()
    assert "cached once: top 16 classes per example, on 2 augmented views" in card
    assert f"distilled from **{teacher}**" in card
    monkeypatch.setenv("HF_DIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # an error before training: in this process, and nothing written
    with pytest.raises(ValueError, match="were made at 32 px and the student trains at 40 px"):
        distill_cifar100.main([*distil_from_cache[2:], "--image_size", "40", "--output_dir", "x"])
    assert not (tmp_path / "x").exists()


def test_reid_chain_on_glyphs_with_two_processes(tmp_path):
    """train-teacher --task reid, then the Market-1501 recipe's script under accelerate launch with 2 CPU processes."""
    data = ["--dataset", "glyphs", "--glyph_classes", "24"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    hf_dis_command("train-teacher", "--task", "reid", *data, "--model", "test_resnet", "--output_dir",
                   str(teacher), "--max_steps", "3", "--per_device_train_batch_size", "8", *QUICK,
                   cache=tmp_path / "cache")  # fmt: skip
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "examples/accelerate/cpu_2proc.yaml",
        "--main_process_port", str(_free_port()), "examples/distill_market1501.py",
    ]  # fmt: skip
    result = hf_dis_command(*data, "--student", "test_resnet", "--teacher_model", str(teacher), "--output_dir",
                            str(student), "--max_steps", "3", "--per_device_train_batch_size", "8", "--logging_steps",
                            "1", *QUICK, cache=tmp_path / "cache", launcher=launch)  # fmt: skip
    metrics = results(student)
    queries = int(metrics["eval_num_valid_queries"] + metrics["eval_num_skipped_queries"])
    assert queries > 0 and 0 <= metrics["eval_mAP"] <= 1 and 0 <= metrics["eval_rank1"] <= 1
    assert "'triplet_loss'" in result.stdout + result.stderr
    # One process evaluating the saved model agrees: the 2-process evaluation counted no padded example twice, and
    # both processes scored rank 0's BatchNorm statistics (BufferSyncCallback; without it mAP differed by ~1e-2).
    evaluated = tmp_path / "evaluated"
    hf_dis_command("evaluate", "--model", str(student), *data, "--output_dir", str(evaluated), cache=tmp_path / "cache")
    assert results(evaluated)["eval_num_valid_queries"] == metrics["eval_num_valid_queries"]
    assert results(evaluated)["eval_mAP"] == pytest.approx(metrics["eval_mAP"], abs=1e-6)


def test_reid_logit_retrieval_scores_the_teachers_descriptors(tmp_path):
    """benchmarks/reid_logit_retrieval.py on a 2-step re-ID teacher: rank-1 and mAP in [0, 1] for its embeddings and
    for its identity logits (raw, and the softmax at each temperature), by both distances."""
    root = write_market_release(tmp_path / "market")
    data = ["--dataset", "market1501", "--data_dir", str(root), "--image_size", "32"]
    hf_dis_command("train-teacher", "--task", "reid", *data, "--pretrained", "false", "--model", "test_resnet",
                   "--output_dir", str(tmp_path / "teacher"), "--max_steps", "2", "--per_device_train_batch_size", "8",
                   *QUICK, cache=tmp_path / "cache")  # fmt: skip
    output = tmp_path / "retrieval.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DIS_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "benchmarks/reid_logit_retrieval.py", "--model", str(tmp_path / "teacher"), *data,
               "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(output.read_text())
    names = {"embeddings (BNNeck)", "identity logits", *(f"identity softmax, T = {t}" for t in ("1", "4", "16"))}
    assert set(report["results"]) == {f"{name}, {metric}" for name in names for metric in ("euclidean", "cosine")}
    assert all(0 <= value["rank1"] <= 1 and 0 <= value["mAP"] <= 1 for value in report["results"].values())
    assert report["queries"] > 0 and report["gallery"] > 0 and report["run"]["hf_dis"]


def test_market1501_recipe_on_the_release_format(tmp_path):
    root = write_market_release(tmp_path / "market")
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    data = ["--dataset", "market1501", "--data_dir", str(root), "--image_size", "32", "--pretrained", "false"]
    hf_dis_command("train-teacher", "--task", "reid", *data, "--model", "test_resnet", "--output_dir",
                   str(teacher), "--max_steps", "2", "--per_device_train_batch_size", "8", *QUICK,
                   cache=tmp_path / "cache")  # fmt: skip
    hf_dis_command("distill", "market1501", *data, "--student", "test_resnet", "--teacher_model", str(teacher),
                   "--output_dir", str(student), "--max_steps", "2", "--per_device_train_batch_size", "8",
                   "--sampler", "full", *QUICK, cache=tmp_path / "cache")  # fmt: skip
    metrics = results(student)
    assert metrics["eval_num_valid_queries"] == 4 and metrics["eval_num_skipped_queries"] == 0
    for folder in (teacher, student):  # BoT's last stride 1 by default on Market-1501 with a timm ResNet
        assert json.loads((folder / "config.json").read_text())["last_stride"] == 1
    # the re-ID teacher run once over the training set (2 views per image), then distilled from without it
    cached, from_cache = tmp_path / "teacher-cache", tmp_path / "from-cache"
    hf_dis_command("cache-teacher", "--task", "reid", *data[:6], "--teacher_model", str(teacher), "--num_views", "2",
                   "--output_dir", str(cached), cache=tmp_path / "cache")  # fmt: skip
    hf_dis_command("distill", "market1501", *data, "--student", "test_resnet", "--teacher_cache", str(cached),
                   "--output_dir", str(from_cache), "--max_steps", "2", "--per_device_train_batch_size", "8", *QUICK,
                   cache=tmp_path / "cache")  # fmt: skip
    assert results(from_cache)["eval_num_valid_queries"] == 4
    assert "on 2 augmented views" in (from_cache / "README.md").read_text()


def test_last_stride_defaults_follow_bot(tmp_path):
    from hf_dis.recipes.data import DataArguments

    market, glyphs = DataArguments(dataset="market1501", data_dir="m"), DataArguments(dataset="glyphs")
    student, _, _ = distill_market1501.parse_args(["--output_dir", str(tmp_path)])
    assert student.reid_last_stride(market, "resnet50") == 1 and student.reid_last_stride(glyphs, "resnet50") is None
    assert student.reid_last_stride(market, "convnext_tiny") is None  # not a ResNet: its own strides
    student, _, _ = distill_market1501.parse_args(["--output_dir", str(tmp_path), "--last_stride", "2"])
    assert student.reid_last_stride(market, "resnet50") is None
    with pytest.raises(ValueError, match="last_stride is a re-ID backbone option"):
        train_teacher.parse_args(["--output_dir", str(tmp_path), "--last_stride", "1"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("learning_rate: fast", "argument --learning_rate/--learning-rate: invalid float value: 'fast'"),
        ("learning_rate: [0.1, 0.2]", "option 'learning_rate' takes one value, the file gives a list: \\[0.1, 0.2\\]"),
        ("dataset: {name: glyphs}", "option 'dataset' is given a mapping"),
    ],
)
def test_a_yaml_value_of_the_wrong_type_names_its_option(tmp_path, line, message, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\n{line}\n")
    with pytest.raises((ValueError, SystemExit)) as raised:
        distill_cifar100.parse_args([str(config)])
    assert re.search(message, str(raised.value) + capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_yaml_numbers_written_as_strings_read_as_numbers(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path}\nlearning_rate: 1e-3\nnum_train_epochs: '3'\nbf16: false\n")
    _, _, args = distill_cifar100.parse_args([str(config)])
    assert (args.learning_rate, args.num_train_epochs, args.bf16) == (1e-3, 3.0, False)
