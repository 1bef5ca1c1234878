"""A user's first hour, measured: one's own image folder and a transformers teacher with its own preprocessing,
distilled with the documented command only (`examples/distil_timm.py`).

    python benchmarks/digits_first_hour.py --output_dir runs/digits-first-hour

1. Renders an image folder of the digits 0-9 in every font of this machine that draws them (`train/` and `test/`,
   one sub-folder per digit; a quarter of the font files, every fourth by name, held out for `test/`), 32 px grey,
   a few jittered renderings per digit and font.
2. Trains the teacher as a user would with plain transformers: a small `ResNetForImageClassification` at 64 px with
   its own `ViTImageProcessor` (mean and std 0.5, not the student's ImageNet statistics), saved with
   `save_pretrained` beside that processor. Its top-1 is measured on its own inputs.
3. Runs `python examples/distil_timm.py --dataset DIR --teacher_model TEACHER ...` (the script's docstring) and reads
   the student's top-1 from its `eval_results.json`.
4. Loads the saved student with `transformers.pipeline("image-classification", model=STUDENT)` (no hf_dis) and
   measures its top-1 on the same test images.

Writes `results.json` in the output folder; `benchmarks/results/digits_first_hour.md` records a run.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from fontTools.ttLib import TTFont, TTLibError
from matplotlib import font_manager
from PIL import ImageFont
from transformers import (
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainingArguments,
    ViTImageProcessor,
    pipeline,
)

from hf_dis.data import load_image_dataset, render_glyph

DIGITS = "0123456789"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "distil_timm.py"


#: Fonts whose character map lists the digits without drawing them: Last Resort draws every character as the
#: placeholder of its Unicode block.
NOT_DIGITS = ("LastResort",)


def digit_fonts() -> list[tuple[Path, int]]:
    """(font file, face index) for every face of this machine's fonts whose character map has all ten digits (but
    `NOT_DIGITS`)."""
    found = []
    for path in sorted(set(font_manager.findSystemFonts()) | set(font_manager.findSystemFonts(
            fontpaths=[str(Path(font_manager.__file__).parent / "mpl-data" / "fonts" / "ttf")]))):  # fmt: skip
        if Path(path).name.startswith(NOT_DIGITS):
            continue
        try:
            collection = TTFont(path, fontNumber=0, lazy=True)
            count = getattr(collection.reader, "numFonts", 1) or 1
        except (TTLibError, OSError, AssertionError):
            continue
        for index in range(count):
            try:
                cmap = TTFont(path, fontNumber=index, lazy=True).getBestCmap() or {}
            except (TTLibError, OSError, AssertionError):
                continue
            if all(ord(digit) in cmap for digit in DIGITS) and _scalable(path, index):
                found.append((Path(path), index))
    return found


def _scalable(path: str, index: int) -> bool:
    """Whether PIL renders this face at any size (bitmap-only fonts have fixed sizes)."""
    try:
        ImageFont.truetype(path, size=48, index=index)
    except OSError:
        return False
    return True


def render_digits(folder: Path, copies: int, seed: int) -> dict[str, int]:
    """Write `folder/{train,test}/<digit>/*.png`; every fourth font face (by file name) is a test face."""
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    for number, (path, index) in enumerate(digit_fonts()):
        split = "test" if number % 4 == 3 else "train"
        font = ImageFont.truetype(str(path), size=48, index=index)
        for digit in DIGITS:
            target = folder / split / digit
            target.mkdir(parents=True, exist_ok=True)
            for copy in range(copies):
                render_glyph(font, digit, 32, rng).save(target / f"{path.stem}-{index}-{copy}.png")
                counts[split] += 1
    return counts


def train_teacher(data_dir: Path, output_dir: Path, epochs: int, seed: int) -> float:
    """A small transformers ResNet trained with the plain Trainer at 64 px in its own normalisation; its top-1."""
    data = load_image_dataset(str(data_dir))
    names = data["train"].features["label"].names
    processor = ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)

    def to_inputs(batch):
        pixels = processor([image.convert("RGB") for image in batch["image"]], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": batch["label"]}

    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                          num_labels=len(names), id2label=dict(enumerate(names)),
                          label2id={name: i for i, name in enumerate(names)})  # fmt: skip
    model = ResNetForImageClassification(config)
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), num_train_epochs=epochs, per_device_train_batch_size=64,
        learning_rate=2e-3, warmup_steps=0.05, lr_scheduler_type="cosine", weight_decay=0.01, save_strategy="no",
        eval_strategy="no", report_to="none", remove_unused_columns=False, seed=seed, logging_steps=50,
        dataloader_pin_memory=False, disable_tqdm=True,
    )  # fmt: skip

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=data["train"].with_transform(to_inputs),
                      eval_dataset=data["test"].with_transform(to_inputs), compute_metrics=accuracy)  # fmt: skip
    trainer.train()
    top1 = trainer.evaluate()["eval_accuracy"]
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    (output_dir / "eval_results.json").write_text(json.dumps({"eval_accuracy": top1}))  # what the card quotes
    return top1


def pipeline_top1(student_dir: Path, data_dir: Path) -> float:
    """Top-1 of the saved student loaded by `transformers.pipeline`, on `data_dir/test`."""
    classifier = pipeline("image-classification", model=str(student_dir), device="cpu")
    test = load_image_dataset(str(data_dir))["test"]
    names = test.features["label"].names
    predictions = classifier(list(test["image"]), top_k=1, batch_size=256)
    return float(np.mean([found[0]["label"] == names[label] for found, label in zip(predictions, test["label"])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=6, help="jittered renderings per digit and font face")
    parser.add_argument("--teacher_epochs", type=int, default=6)
    parser.add_argument("--student_epochs", type=int, default=10, help="the example script's default")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    data_dir, teacher_dir, student_dir = (options.output_dir / name for name in ("digits", "teacher", "student"))
    counts = render_digits(data_dir, options.copies, options.seed)
    print(f"rendered {counts}", flush=True)
    teacher_top1 = train_teacher(data_dir, teacher_dir, options.teacher_epochs, options.seed)
    print(f"teacher top-1 on its own inputs: {teacher_top1:.4f}", flush=True)
    command = [sys.executable, str(EXAMPLE), "--dataset", str(data_dir), "--teacher_model", str(teacher_dir),
               "--student", "resnet18", "--image_size", "32", "--augment", "false",
               "--num_train_epochs", str(options.student_epochs), "--output_dir", str(student_dir),
               "--report_to", "none", "--seed", str(options.seed)]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    student = json.loads((student_dir / "eval_results.json").read_text())
    result = {"images": counts, "teacher_top1": teacher_top1, "student_top1": student["eval_accuracy"],
              "pipeline_top1": pipeline_top1(student_dir, data_dir), "command": command[1:],
              "student_metrics": student}  # fmt: skip
    (options.output_dir / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({key: result[key] for key in ("images", "teacher_top1", "student_top1", "pipeline_top1")}))


if __name__ == "__main__":
    main()
