import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
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


def _image_folder_and_teacher(tmp_path):
    """A `datasets` image folder of 3 classes (train / test) and a timm teacher saved to a local folder."""
    import numpy as np
    import transformers
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for label in ("cat", "dog", "fox"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    config = transformers.TimmWrapperConfig(architecture="test_resnet", num_labels=3)
    transformers.TimmWrapperForImageClassification(config).save_pretrained(tmp_path / "teacher")


def distil_timm(tmp_path, output: str, *options: str) -> subprocess.CompletedProcess:
    return run_script(
        "examples/distil_timm.py", "--dataset", str(tmp_path / "images"), "--student", "test_convnext",
        "--image_size", "32", "--teacher_model", str(tmp_path / "teacher"), "--output_dir", str(tmp_path / output),
        "--per_device_train_batch_size", "4", "--use_cpu",
        "--report_to", "none", "--logging_steps", "1", *options,
    )  # fmt: skip


def test_distil_timm_example_resumes_and_its_student_loads_with_pipeline_and_timm(tmp_path):
    """The README's script on a `datasets` image folder with a teacher saved to a local folder. Stopped after 2 of 4
    steps (its checkpoint kept), then run again with --resume_from_checkpoint true: the same weights as 4 steps in one
    go (a constant learning rate, so that the stopped run's schedule is the same; no random augmentation: the
    Trainer's loader has drawn the next batch's before a checkpoint saves the random state). The saved timm student
    carries its image processor: `pipeline("image-classification")` predicts what the model predicts on the example's
    evaluation transform; the card's timm recipe gives the trained weights."""
    import timm
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoModelForImageClassification, pipeline

    from hf_dis.data import image_transform

    _image_folder_and_teacher(tmp_path)
    common = ("--lr_scheduler_type", "constant", "--warmup_steps", "0", "--save_strategy", "steps", "--save_steps",
              "2", "--eval_strategy", "no", "--augment", "false", "--sampler", "dis",
              "--dis_refit_every", "2")  # fmt: skip
    result = distil_timm(tmp_path, "whole", "--max_steps", "4", *common)
    assert "'eval_accuracy'" in result.stdout and "'teacher_mass'" in result.stdout
    distil_timm(tmp_path, "parts", "--max_steps", "2", *common)
    assert (tmp_path / "parts" / "checkpoint-2").is_dir()
    distil_timm(tmp_path, "parts", "--max_steps", "4", "--resume_from_checkpoint", "true", *common)
    whole, parts = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "parts"))
    assert whole.keys() == parts.keys() and all(torch.equal(whole[key], parts[key]) for key in whole)
    stopped = load_file(tmp_path / "parts" / "checkpoint-2" / "model.safetensors")
    assert not all(torch.equal(whole[key], stopped[key]) for key in whole)  # the resumed steps changed the weights

    folder = tmp_path / "whole"
    assert (folder / "preprocessor_config.json").is_file()
    assert "eval_accuracy" in json.loads((folder / "eval_results.json").read_text())
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    images = [Image.open(path) for path in sorted((tmp_path / "images" / "test").rglob("*.png"))]
    transform = image_transform(model, training=False, image_size=32)
    with torch.no_grad():
        expected = model(torch.stack([transform(image) for image in images])).logits.argmax(-1).tolist()
    classifier = pipeline("image-classification", model=str(folder), device="cpu")
    predicted = [result[0]["label"] for result in classifier(images, top_k=1)]
    assert predicted == [model.config.id2label[index] for index in expected]
    card = (folder / "README.md").read_text()
    assert 'timm.create_model("test_convnext", num_classes=3)' in card and "trained on images." in card
    plain = timm.create_model("test_convnext", num_classes=3)  # the card's recipe, on the local file
    plain.load_state_dict({key.removeprefix("timm_model."): value for key, value in whole.items()})  # strict
    trained = model.timm_model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in plain.state_dict().items())


def test_quickstart_smoke(tmp_path):
    """The README's first command, shrunk: a 30-class glyph task, a few steps per model, a 2,000-class head timed."""
    result = run_script(
        "examples/quickstart.py", "--num-classes", "30", "--teacher-steps", "3", "--student-steps", "3",
        "--batch-size", "16", "--many-classes", "2000", "--quiet", "--output-dir", str(tmp_path / "out"),
        env={"HF_DIS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert "Glyph task: 30 classes" in result.stdout
    assert re.search(r"^Teacher: \d+\.\d% top-1 on the test fonts", result.stdout, re.M)  # as soon as it is known
    assert "sampler: auto chose full" in result.stderr  # 30 classes: sampling cannot pay, and auto says so
    for row in ("teacher", "student (full KD)"):
        assert re.search(rf"^{re.escape(row)} +\d+\.\d%$", result.stdout, re.M), row
    for classes in ("30", "2,000"):
        assert re.search(rf"^ +{classes} classes: full KD +\d+\.\d ms, DIS \(K = \d+\) +\d+\.\d ms \(\d\.\d\dx\): "
                         r"auto would take (dis|full)$", result.stdout, re.M), classes  # fmt: skip
    assert (tmp_path / "out" / "student" / "model.safetensors").is_file()


def test_bench_sharded_smoke(tmp_path):
    """One process with the whole classifier, then two gloo processes with half of it each: every process reports
    its rows, its peak memory and a step time."""
    import json

    run_script("benchmarks/bench_sharded.py", "--smoke", "--out", str(tmp_path))
    lines = (tmp_path / "bench_sharded.jsonl").read_text().splitlines()
    meta, rows = json.loads(lines[0])["meta"], [json.loads(line) for line in lines[1:]]
    assert meta["classes"] == 2000 and meta["processes"] == 2
    assert [(row["processes"], row["rank"], row["rows"]) for row in rows] == [(1, 0, 2000), (2, 0, 1000), (2, 1, 1000)]
    assert all(row["peak_mb"] >= row["baseline_mb"] > 0 and row["step_ms"] > 0 for row in rows)
    assert (tmp_path / "bench_sharded.png").is_file() and "peak above the runtime" in (
        tmp_path / "bench_sharded.md"
    ).read_text()


def test_bench_head_smoke(tmp_path):
    import json

    run_script("benchmarks/bench_head.py", "--smoke", "--profile", "--device", "cpu", "--out", str(tmp_path))
    lines = (tmp_path / "bench_head.jsonl").read_text().splitlines()
    meta, rows = json.loads(lines[0])["meta"], [json.loads(line) for line in lines[1:]]
    assert meta["device"].startswith("CPU") and meta["hf_dis"]
    # C = 100 and 751: full, then 3 samplers x 2 scopes x 3 optimizers at one K
    assert len(rows) == 2 * (1 + 3 * 2 * 3) and all(row["ms"] > 0 for row in rows)
    assert {row["optimizer"] for row in rows} == {"adamw", "row_sparse_adamw", "row_sparse_adamw_rowwise"}
    # profiled: the ATen operators of one step; drawing adds operators. Operators that would synchronise on an
    # accelerator: sampling adds none to the dense optimizer's; the row-sparse one asks whether its sparse gradient's
    # rows are already distinct and in order, which per-example sets' are (they find their union first: the sparse
    # gradient rules out the all-classes GEMM) and the batch scope's are not (it then coalesces them).
    assert all(len(row["top_ops"]) == 3 for row in rows)
    full = next(row for row in rows if row["method"] == "full")
    assert all(row["launches"] > full["launches"] for row in rows if row["method"] != "full")
    for row in rows[1:]:
        assert row["syncs"] == (full["syncs"] if row["optimizer"] == "adamw" else 2), row
    if sys.platform == "linux":  # the resident set's peak above the runtime's: at least the head's weights
        assert meta["peak_memory"].startswith("peak resident set")
        assert all(row["peak_mb"] >= 751 * 16 * 4 / 2**20 for row in rows if row["num_classes"] == 751)
        assert all(0 < row["live_mb"] <= row["peak_mb"] for row in rows)
    assert (tmp_path / "bench_head.png").stat().st_size > 0 and "| 751 | full |" in (
        tmp_path / "bench_head.md"
    ).read_text()


def test_bench_loader_smoke(tmp_path):
    import json

    run_script("benchmarks/bench_loader.py", "--smoke", "--out", str(tmp_path), env={"HF_DIS_CACHE": str(tmp_path)})
    rows = [json.loads(line) for line in (tmp_path / "bench_loader.jsonl").read_text().splitlines()[1:]]
    assert [(row["case"], row["pipeline"].split(",")[0]) for row in rows] == [
        (case, pipeline) for case in ("glyphs 32 x 32", "re-ID 256 x 128")
        for pipeline in ("torchvision", "padded_crop_transform")
    ]  # fmt: skip
    assert all(row["images_per_second"] > 0 for row in rows) and (tmp_path / "bench_loader.png").stat().st_size


def test_bench_step_smoke(tmp_path):
    import json

    run_script("benchmarks/bench_step.py", "--smoke", "--device", "cpu", "--out", str(tmp_path))
    lines = (tmp_path / "bench_step.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines[1:]]
    methods = ["backbone_only", "backbones_only", "full_kd", "dis_live_teacher", "dis_cached_teacher"]
    assert [row["method"] for row in rows] == methods and all(row["ms"] > 0 for row in rows)
    assert json.loads(lines[0])["meta"]["teacher"] == "test_convnext"
    assert (tmp_path / "bench_step.png").stat().st_size > 0


def test_with_py_spy_runs_the_command_without_py_spy(tmp_path):
    script = ROOT / "benchmarks" / "with_py_spy.sh"
    command = [sys.executable, "-c", "import sys; print('ran'); sys.exit(3)"]
    result = subprocess.run(
        [shutil.which("bash"), str(script), "0", "1", str(tmp_path / "stacks.txt"), *command],
        capture_output=True, text=True, timeout=600, env={"PATH": str(tmp_path)},  # no py-spy on this PATH
    )  # fmt: skip
    assert result.stdout == "ran\n" and result.returncode == 3  # the command's output and exit status
    assert "py-spy is not installed" in result.stderr and not (tmp_path / "stacks.txt").exists()


def test_stack_sampler_reads_the_main_threads_stack():
    import importlib.util
    import threading

    spec = importlib.util.spec_from_file_location("stack_sampling", ROOT / "benchmarks/stack_sampling/sitecustomize.py")
    sampler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sampler)  # HF_DIS_STACK_SAMPLES unset: nothing starts
    seen = []

    def waiting_here():
        helper = threading.Thread(target=lambda: seen.append(sampler.main_thread_stack()))
        helper.start()
        helper.join()

    waiting_here()  # the main thread is inside it (starting or joining the helper) while the helper reads its stack
    assert "test_examples.py:test_stack_sampler_reads_the_main_threads_stack;test_examples.py:waiting_here;" in seen[0]


def test_stack_sampler_writes_each_process_file(tmp_path):
    folder = tmp_path / "stacks"
    env = {**os.environ, "HF_DIS_STACK_SAMPLES": str(folder), "PYTHONPATH": str(ROOT / "benchmarks/stack_sampling")}
    subprocess.run([sys.executable, "-c", "print('ran')"], check=True, env=env, timeout=600)
    (written,) = folder.glob("stacks-*.txt")  # one file for the one process, written at its exit
    assert written.read_text().splitlines()[0] == "-c"  # its command line first


def test_bench_trainer_smoke(tmp_path):
    import json

    run_script("benchmarks/bench_trainer.py", "--smoke", "--device", "cpu", "--samplers", "full", "dis", "--out",
               str(tmp_path))  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "bench_trainer.jsonl").read_text().splitlines()[1:]]
    assert [(row["sampler"], row["num_sampled"]) for row in rows] == [("full", 40), ("dis", 1), ("dis", 4)]
    assert all(row["median_step_ms"] > 0 and row["train_runtime_ms_per_step"] > 0 for row in rows)
    # DIS probes at step 0 (every 50 steps): one probe in the 6 steps, none for full KD
    assert [row["probe_steps"] for row in rows] == [0, 1, 1] and rows[0]["mean_probe_step_ms"] is None
    # The counted step: a sampled one for DIS (drawing and the sampled loss add operators), the same count for both K
    full_ops, *dis_ops = (row["operators_per_step"] for row in rows)
    assert full_ops > 100 and dis_ops[0] == dis_ops[1] > full_ops
    assert (tmp_path / "bench_trainer.png").stat().st_size > 0
    # From a teacher cache (no teacher), with the floor and row-sparse classifier updates for the sampled run
    cached = tmp_path / "cached"
    options = ["--fractions", "4", "--cached", "8", "--floor", "--classifier-optimizer", "row_sparse", "--profile"]
    run_script("benchmarks/bench_trainer.py", "--smoke", "--device", "cpu", "--samplers", "full", "dis", *options,
               "--out", str(cached))  # fmt: skip
    rows = [json.loads(line) for line in (cached / "bench_trainer.jsonl").read_text().splitlines()[1:]]
    assert [(row["sampler"], row["classes"], row["num_sampled"]) for row in rows] == [
        ("full", 40, 40),
        ("dis", 40, 4),
        ("floor", 6, 6),
    ]
    assert "no teacher: a cache of the top 8 classes" in (cached / "bench_trainer.md").read_text()
    # The step, part by part (hf_dis.step_parts): DIS draws, every run runs its classifier, a backward and an update
    lines = (cached / "bench_trainer_profile.jsonl").read_text().splitlines()[1:]
    profiles = {row["sampler"]: row["profile"] for row in map(json.loads, lines)}
    assert list(profiles) == ["dis", "full", "floor"]
    assert profiles["dis"]["sampler"] > 0 and profiles["full"]["sampler"] == profiles["floor"]["sampler"] == 0
    for parts in profiles.values():
        assert min(parts[name] for name in ("data", "backbone", "head", "loss", "backward", "optimizer")) > 0, parts
        assert parts["teacher"] == 0 and parts["step"] > parts["backbone"] + parts["backward"], parts
        assert parts["other"] >= 0, parts  # disjoint parts of the step: the row-sparse step (nested) counted once


def test_bench_trainer_reads_a_saved_training_set_with_its_teacher_cache(tmp_path):
    import json
    import statistics

    import hf_dis

    task = hf_dis.data.load_glyphs(num_classes=40, image_size=32, seed=0, include_system_fonts=False)
    teacher = hf_dis.timm_classifier("test_resnet.r160_in1k", 40, seed=1)
    transform = hf_dis.data.padded_crop_transform(image_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, training=False)
    cache = hf_dis.data.cache_teacher_logits(teacher, task["train"], transform, top_r=16, batch_size=64)
    cache.save_to_disk(tmp_path / "cache")
    options = ["--fractions", "4", "--data", str(tmp_path / "cache"), "--floor", "--classifier-optimizer", "row_sparse",
               "--rounds", "2"]  # fmt: skip
    run_script("benchmarks/bench_trainer.py", "--smoke", "--device", "cpu", "--samplers", "full", "dis", *options,
               "--out", str(tmp_path))  # fmt: skip
    lines = (tmp_path / "bench_trainer.jsonl").read_text().splitlines()
    meta, rows = json.loads(lines[0])["meta"], [json.loads(line) for line in lines[1:]]
    assert meta["classes"] == 40 and meta["top_r"] == 16 and meta["data"] == str(tmp_path / "cache")
    assert [(row["sampler"], row["classes"], row["num_sampled"]) for row in rows] == [
        ("full", 40, 40),
        ("dis", 40, 4),
        ("floor", 6, 6),  # a plain Trainer on the labels modulo 6
    ]
    assert all(row["median_between_steps_ms"] > 0 and row["train_runtime_ms_per_step"] > 0 for row in rows)
    for row in rows:  # the median of the two rounds, each round's kept
        assert row["train_runtime_ms_per_step"] == statistics.median(row["rounds_train_runtime_ms_per_step"])
        assert len(row["rounds_train_runtime_ms_per_step"]) == 2
    table = (tmp_path / "bench_trainer.md").read_text()
    assert "teacher cache `" in table and "| floor | 6 | 6 |" in table and "median of 2 interleaved rounds" in table


def test_bench_refit_runs(tmp_path):
    import json

    run_script("benchmarks/bench_refit.py", "--classes", "100", "2000", "--repeats", "2", "--out", str(tmp_path))
    meta, *rows = (json.loads(line) for line in (tmp_path / "bench_refit.jsonl").read_text().splitlines())
    assert meta["meta"]["switch_interval_ms"] > 0
    assert [row["num_classes"] for row in rows] == [100, 2000]
    assert all(row["alone_ms"] > 0 and row["busy_thread_ms"] > 0 for row in rows)
    assert (tmp_path / "bench_refit.png").stat().st_size > 0


def test_bench_cache_lookup_runs(tmp_path):
    import json

    run_script("benchmarks/bench_cache_lookup.py", "--classes", "100", "3000", "--sampled", "5", "--batch-size", "4",
               "--top-r", "50", "--repeats", "2", "--out", str(tmp_path))  # fmt: skip
    meta, *rows = (json.loads(line) for line in (tmp_path / "bench_cache_lookup.jsonl").read_text().splitlines())
    assert meta["meta"]["top_r"] == 50
    assert [(row["num_classes"], row["sampled"]) for row in rows] == [(100, 5), (3000, 5)]
    assert all(row["dense_ms"] > 0 and row["lookup_ms"] > 0 for row in rows)
    assert (tmp_path / "bench_cache_lookup.png").stat().st_size > 0


def test_reproduce_smoke_study_runs_and_resumes(tmp_path, monkeypatch, capsys):
    import json
    import math

    import yaml

    def reproduce_here(*argv: str) -> str:
        """reproduce.py in this process (what it only reads and reports needs no process of its own): its output."""
        monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
        monkeypatch.setenv("HF_DIS_CACHE", str(tmp_path / "cache"))
        import reproduce

        capsys.readouterr()
        reproduce.main(list(argv))
        return capsys.readouterr().out

    config = yaml.safe_load((ROOT / "benchmarks" / "studies" / "smoke.yaml").read_text())
    config["output_dir"] = str(tmp_path / "study")
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(config))
    env = {"HF_DIS_CACHE": str(tmp_path / "cache")}
    progress = run_script("benchmarks/reproduce.py", str(tmp_path / "smoke.yaml"), "--jobs", "2", env=env).stdout
    results = tmp_path / "study" / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert "4 of the study's 4 student runs to go" in progress and "[4/4] " in progress  # one line per finished run
    # full KD per seed, then 1 sampler x 1 fraction x 2 seeds (the scratch baseline: the teacher-cache study's test)
    assert sorted(row["key"] for row in rows) == ["dis-0.25-0", "dis-0.25-1", "full-None-0", "full-None-1"]
    assert all(0 <= row["eval_accuracy"] <= 1 for row in rows)
    # the last point of each run's curve is its final evaluation, after all of its training seconds
    assert all(row["curve"][-1][1] == row["eval_accuracy"] and row["epochs"] > 0 for row in rows)
    table = (tmp_path / "study" / "results.md").read_text()
    assert "| dis | 0.25 | 2 |" in table and "| full | - | 2 |" in table and "Teacher (test_resnet)" in table
    assert (tmp_path / "study" / "results.png").stat().st_size > 0
    teacher_results = tmp_path / "study" / "teacher" / "eval_results.json"
    stamp = teacher_results.stat().st_mtime_ns
    resumed = reproduce_here(str(tmp_path / "smoke.yaml"))  # nothing to run
    assert "0 of the study's 4 student runs to go" in resumed
    assert len(results.read_text().splitlines()) == len(rows) and teacher_results.stat().st_mtime_ns == stamp
    spread = tmp_path / "study" / "prediction_spread_smoke.jsonl"
    run_script("benchmarks/prediction_spread.py", str(tmp_path / "smoke.yaml"), "--runs", "full-None-0", env=env)
    measured = json.loads(spread.read_text().splitlines()[1])
    assert measured["accuracy"] == pytest.approx(next(r["eval_accuracy"] for r in rows if r["key"] == "full-None-0"))
    assert 1 <= measured["distinct_predicted"] <= measured["num_classes"] == 12 and 0 < measured["top_share"] <= 1
    assert measured["hubs"] == min(6, measured["distinct_predicted"]) and math.isfinite(
        measured["hub_mean_feature_logit"] - measured["other_mean_feature_logit"]
    )
    (tmp_path / "study" / "results.md").unlink()
    reproduce_here(str(tmp_path / "smoke.yaml"), "--report")  # the table only
    rewritten = (tmp_path / "study" / "results.md").read_text()
    assert rewritten.split("| method")[1] == table.split("| method")[1]  # the same table (its header has the date)
    assert len(results.read_text().splitlines()) == len(rows)
    config["teacher_dir"] = str(tmp_path / "study" / "teacher")  # a study distilling from a teacher it did not train
    (tmp_path / "borrowed.yaml").write_text(yaml.safe_dump(config))
    reproduce_here(str(tmp_path / "borrowed.yaml"), "--report")
    assert f"Teacher ({config['teacher_dir']}): " in (tmp_path / "study" / "results.md").read_text()


def test_reproduce_study_with_a_teacher_cache_and_the_floor(tmp_path):
    """A study with `teacher_cache` (made once, read by every distilled run, full KD included), the floor (the
    saved task relabelled to K + 2 classes, trained from scratch) and an absolute K: the rows, the relabelled task,
    the table's time ratio and peak memory, and the plot of accuracy against time."""
    import json

    import datasets
    import yaml

    env = {"HF_DIS_CACHE": str(tmp_path / "cache")}
    task = tmp_path / "task"
    run_script("-m", "hf_dis.cli", "render-glyphs", "--glyph_classes", "12", "--output_dir", str(task), env=env)
    budget = {"max_steps": 2, "per_device_train_batch_size": 16, "report_to": "none", "use_cpu": True,
              "save_strategy": "no", "disable_tqdm": True}  # fmt: skip
    config = {
        "name": "cached", "task": "classification", "output_dir": str(tmp_path / "study"),
        "data": {"dataset": "glyphs", "data_dir": str(task)}, "teacher_model": "test_resnet",
        "teacher_options": budget, "teacher_cache": {"top_r": 12}, "student": "test_resnet", "training": budget,
        "baselines": ["scratch", "full", "floor"], "samplers": ["dis"], "fractions": [3],
        "sampling": {"classifier_optimizer": "row_sparse"}, "seeds": [0],
    }  # fmt: skip
    (tmp_path / "cached.yaml").write_text(yaml.safe_dump(config))
    study = tmp_path / "study"
    prepared = run_script("benchmarks/reproduce.py", str(tmp_path / "cached.yaml"), "--prepare", env=env).stdout
    assert f"prepared {study}" in prepared and (study / "teacher_cache").is_dir() and (study / "floor_task_5").is_dir()
    assert not (study / "results.jsonl").exists() and not (study / "study_config.json").exists()  # no run yet
    progress = run_script("benchmarks/reproduce.py", str(tmp_path / "cached.yaml"), env=env).stdout
    assert "4 of the study's 4 student runs to go" in progress
    rows = {row["key"]: row for row in map(json.loads, (study / "results.jsonl").read_text().splitlines())}
    assert sorted(rows) == ["dis-3-0", "floor-3-0", "full-None-0", "scratch-None-0"]
    assert all(row["peak_rss_mb"] > 100 and row["train_runtime"] > 0 for row in rows.values())
    floor = datasets.load_from_disk(str(study / "floor_task_5"))
    assert floor["train"].features["label"].num_classes == 5 and max(floor["train"]["label"]) < 5
    assert len(floor["train"]) == len(datasets.load_from_disk(str(task))["train"])
    for run in ("full-None-0", "dis-3-0"):  # both read the one cache, no teacher
        card = (study / run / "README.md").read_text()
        assert "cached once: top 12 classes per example" in card
    assert "RowSparseSGD on the sampled rows" in (study / "dis-3-0" / "README.md").read_text()
    assert "with the other parameters" in (study / "full-None-0" / "README.md").read_text()
    table = (study / "results.md").read_text()
    assert "| full | - | 1 |" in table and "| 1.00 |" in table and "| floor | 3 | 1 | - | - |" in table
    assert (study / "results_time.png").stat().st_size > 0


@pytest.mark.parametrize("dataset", ["cifar100", "market1501"])
def test_dataset_study_runs_on_the_original_format(dataset, tmp_path):
    """A committed CIFAR-100 or Market-1501 study, with its data in the authors' format (the `cifar-100-python`
    pickles, the Market-1501 release folder) and its budget cut to a few steps of tiny models: reproduce.py end to
    end on the method's two benchmarks (teacher, full KD, DIS), each with its task's metrics."""
    import json

    import yaml
    from tiny_models import write_cifar100_release, write_market_release

    config = yaml.safe_load((ROOT / "benchmarks" / "studies" / f"{dataset}.yaml").read_text())
    if dataset == "cifar100":
        data_dir = tmp_path / "cifar-100-python"
        write_cifar100_release(data_dir, {"train": 16, "test": 8})
        metrics = ("eval_accuracy", "eval_top5")
    else:
        data_dir = write_market_release(tmp_path / "market")
        metrics = ("eval_rank1", "eval_mAP")
    config["data"] = {**config["data"], "data_dir": str(data_dir), "image_size": 32, "pretrained": False}
    quick = {"max_steps": 2, "per_device_train_batch_size": 8, "report_to": "none", "use_cpu": True,
             "save_strategy": "no", "disable_tqdm": True}  # fmt: skip
    # scratch left out: its recipe is the teacher's, which runs here anyway
    config.update(output_dir=str(tmp_path / "study"), teacher_model="test_resnet", student="test_resnet",
                  teacher_options=quick, training=quick, baselines=["full"], samplers=["dis"], fractions=[0.5],
                  seeds=[0])  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    run_script("benchmarks/reproduce.py", str(tmp_path / "study.yaml"), env={"HF_DIS_CACHE": str(tmp_path / "cache")})
    rows = [json.loads(line) for line in (tmp_path / "study" / "results.jsonl").read_text().splitlines()]
    assert sorted(row["key"] for row in rows) == ["dis-0.5-0", "full-None-0"]
    assert all(0 <= row[metric] <= 1 for row in rows for metric in metrics)
    table = (tmp_path / "study" / "results.md").read_text()
    assert f"| {metrics[0]} (%) | {metrics[1]} (%) |" in table and "| dis | 0.5 | 1 |" in table


def test_a_study_without_baselines_runs_only_its_sampled_grid(monkeypatch):
    """`baselines: []` (a study that varies a sampled run's options) leaves out scratch and full KD; an unknown
    baseline is refused."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    reproduce = __import__("reproduce")
    options = dict(name="s", task="classification", output_dir="o", samplers=["dis"], fractions=[0.1], seeds=[0, 1])
    assert [run["method"] for run in reproduce.runs(reproduce.Study(**options, baselines=[]))] == ["dis", "dis"]
    assert [run["method"] for run in reproduce.runs(reproduce.Study(**options))][:3] == ["scratch", "full", "dis"]
    with pytest.raises(
        ValueError, match="baselines must be among \\['scratch', 'full', 'floor'\\], got \\['teacher'\\]"
    ):
        reproduce.Study(**options, baselines=["teacher"])
    with pytest.raises(ValueError, match="the floor relabels a saved glyph task"):
        reproduce.Study(**options, baselines=["floor"])  # no data_dir
    del sys.modules["reproduce"]


def test_a_study_can_read_another_studys_teacher_cache(monkeypatch, tmp_path):
    """`teacher_cache_dir` (a variant study on another's teacher cache) is read as it is: nothing is cached."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    reproduce = __import__("reproduce")
    options = dict(name="s", task="classification", output_dir=str(tmp_path), samplers=["dis"], fractions=[64])
    study = reproduce.Study(**options, teacher_cache={"top_r": 8}, teacher_cache_dir="elsewhere/teacher_cache")
    assert reproduce.teacher_cache_folder(study, tmp_path, "no-teacher") == "elsewhere/teacher_cache"
    assert list(tmp_path.iterdir()) == []
    assert reproduce.teacher_cache_folder(reproduce.Study(**options), tmp_path, "no-teacher") is None
    del sys.modules["reproduce"]


@pytest.mark.parametrize("config", sorted((ROOT / "benchmarks" / "studies").rglob("*.yaml")), ids=lambda p: p.stem)
def test_study_configs_name_real_recipe_options(config, monkeypatch, tmp_path):
    """Every committed study parses, and the recipes accept its teacher, student and scratch options."""
    import sys

    from hf_dis.recipes import distill_cifar100, distill_market1501, train_teacher

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.chdir(tmp_path)
    reproduce = __import__("reproduce")
    study = reproduce.load_study(str(config))
    for options in (study.teacher_options, study.training):
        options.pop("bf16", None)  # GPU studies: TrainingArguments refuses bf16 where the device lacks it
    data, training = reproduce.flags(study.data), reproduce.flags(study.training)
    train_teacher.parse_args(["--task", study.task, "--model", study.teacher_model, *data,
                              *reproduce.flags(study.teacher_options)])  # fmt: skip
    train_teacher.parse_args(["--task", study.task, "--model", study.student, *data, *training])
    recipe = distill_cifar100 if study.task == "classification" else distill_market1501
    sampling = ["--sampler", "full"]
    if study.fractions:
        sampling = ["--sampler", "dis", "--num_sampled", reproduce.num_sampled(study.fractions[0])]
        sampling += reproduce.flags(study.sampling)
    recipe.parse_args(["--student", study.student, "--teacher_model", "t", *sampling,
                       *reproduce.flags(study.distillation), *data, *training])  # fmt: skip
    if study.teacher_cache is not None:
        from hf_dis.recipes import cache_teacher

        cache_teacher.parse_args(["--task", study.task, "--teacher_model", "t", "--output_dir", "c", *data,
                                  *reproduce.flags(study.teacher_cache)])  # fmt: skip
    floors = len(study.fractions) if "floor" in study.baselines else 0
    per_seed = len(set(study.baselines) - {"floor"}) + floors + len(study.samplers) * len(study.fractions)
    assert len(reproduce.runs(study)) == len(study.seeds) * per_seed
    del sys.modules["reproduce"]


def _rows(path):
    import json

    lines = path.read_text().splitlines()
    return json.loads(lines[0])["meta"], [json.loads(line) for line in lines[1:]]


def test_bench_crossover_smoke(tmp_path):
    run_script("benchmarks/bench_crossover.py", "--smoke", "--out", str(tmp_path))
    meta, rows = _rows(tmp_path / "crossover.jsonl")
    # C = 50 and 400, K = 4 and 64 where K < C: three cells, each with both times and auto's choice
    assert [(r["classes"], r["num_sampled"]) for r in rows] == [(50, 4), (400, 4), (400, 64)]
    assert all(r["full_ms"] > 0 and r["dis_ms"] > 0 and r["auto"] in ("dis", "full") for r in rows)
    assert {"classes", "width", "batch_size", "num_sampled", "device", "full_ms", "dis_ms", "auto"} <= set(rows[0])
    assert "auto right in" in (tmp_path / "crossover.md").read_text() and (tmp_path / "crossover.png").stat().st_size
    assert not (tmp_path / "crossover.partial.jsonl").exists()


def test_bench_cache_read_smoke(tmp_path):
    run_script("benchmarks/bench_cache_read.py", "--smoke", "--out", str(tmp_path), env={"HF_DIS_CACHE": str(tmp_path)})
    _, rows = _rows(tmp_path / "bench_cache_read.jsonl")
    # R = 8 int32 classes and float32 logits per row at least, and a batch read
    assert len(rows) == 1 and rows[0]["bytes_per_row"] > 8 * 8 and rows[0]["read_ms"] > 0


def test_bench_eval_memory_smoke(tmp_path):
    run_script("benchmarks/bench_eval_memory.py", "--smoke", "--out", str(tmp_path))
    _, rows = _rows(tmp_path / "bench_eval_memory.jsonl")
    assert [r["case"] for r in rows] == ["ranked", "logits"] and rows[0]["accuracy"] == rows[1]["accuracy"]


def test_a_study_refuses_runs_that_read_another_teacher_and_a_changed_config(monkeypatch, tmp_path):
    """A teacher option among one group of runs' options is refused before any run, naming those runs; a resumed
    study with another config is refused, naming each change; rows say which code ran them."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    reproduce = __import__("reproduce")
    options = dict(name="s", task="classification", output_dir=str(tmp_path), samplers=["dis"], fractions=[64, 256],
                   seeds=[0], teacher_cache={"top_r": 8})  # fmt: skip
    with pytest.raises(ValueError, match="sampling sets teacher_cache, so runs dis-64-0, dis-256-0 would read"):
        reproduce.Study(**options, sampling={"teacher_cache": "other"})
    with pytest.raises(ValueError, match="method_training.full sets teacher_model, so runs full-None-0 would"):
        reproduce.Study(**options, method_training={"full": {"teacher_model": "resnet50"}})
    with pytest.raises(ValueError, match="method_training names methods the study does not run: \\['topk'\\]"):
        reproduce.Study(**options, method_training={"topk": {"num_train_epochs": 3}})
    reproduce.check_config_unchanged(reproduce.Study(**options), tmp_path)
    reproduce.check_config_unchanged(reproduce.Study(**options), tmp_path)  # the same config resumes
    with pytest.raises(SystemExit, match="another config \\(fractions: \\[64, 256\\] -> \\[64\\]\\)"):
        reproduce.check_config_unchanged(reproduce.Study(**{**options, "fractions": [64]}), tmp_path)
    assert len(reproduce.code_version()) == 12
    del sys.modules["reproduce"]


def test_time_to_accuracy_reads_each_runs_curve(monkeypatch):
    """Full KD ends at 0.40 after 100 s (its curve reaches 0.395 at 80 s); DIS reaches it at 30 s and holds 0.45 at
    100 s; scratch never does."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    reproduce = __import__("reproduce")
    rows = [
        {"key": "full-None-0", "method": "full", "seed": 0, "eval_accuracy": 0.40, "train_runtime": 100.0,
         "epochs": 1.0, "curve": [[40.0, 0.2], [80.0, 0.395], [100.0, 0.40]]},
        {"key": "dis-64-0", "method": "dis", "seed": 0, "eval_accuracy": 0.5, "train_runtime": 150.0,
         "epochs": 3.0, "curve": [[30.0, 0.41], [90.0, 0.45], [150.0, 0.5]]},
        {"key": "scratch-None-0", "method": "scratch", "seed": 0, "eval_accuracy": 0.1, "train_runtime": 90.0,
         "epochs": 1.0, "curve": [[90.0, 0.1]]},
    ]  # fmt: skip
    table = "\n".join(reproduce.time_to_accuracy(rows, "eval_accuracy"))
    assert "| full-None-0 | 1.00 | 80 | 1.00 | 40.00 |" in table
    assert "| dis-64-0 | 3.00 | 30 | 0.38 | 45.00 |" in table
    assert "| scratch-None-0 | 1.00 | not reached | - | 10.00 |" in table
    del sys.modules["reproduce"]
