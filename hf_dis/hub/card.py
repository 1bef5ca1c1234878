"""Model cards of distilled students: what the card says (`StudentCardData`, gathered from a finished
`DistillationTrainer` and saved as `distillation_card.json` beside the model) and how it is rendered (`render_card`:
Hub metadata through `huggingface_hub.ModelCardData`, body from the Jinja templates in `hf_dis/hub/templates/`).

The JSON file is what `hf-dis card` and `hf-dis push` re-render from, so a card can be rebuilt (or fixed: edit the
JSON) without the trainer.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_DATA_NAME = "distillation_card.json"
TEMPLATES = Path(__file__).resolve().parent / "templates"
TASKS = {"image-classification": "classification_student.md", "person-reidentification": "reid_student.md"}

CITATION = """@article{li2018dis,
  title   = {Accelerating Large Scale Knowledge Distillation via Dynamic Importance Sampling},
  author  = {Li, Minghan and Zuo, Tanli and Li, Ruicheng and White, Martha and Zheng, Wei-Shi},
  journal = {arXiv preprint arXiv:1812.00914},
  year    = {2018}
}"""

#: Evaluation metrics shown in the card and the model-index, per task: (key in the Trainer's metrics, name, type).
METRICS = {
    "image-classification": [("accuracy", "Top-1 accuracy", "accuracy"), ("top5", "Top-5 accuracy", "top_5_accuracy")],
    "person-reidentification": [
        ("rank1", "Rank-1", "rank_1"),
        ("rank5", "Rank-5", "rank_5"),
        ("rank10", "Rank-10", "rank_10"),
        ("mAP", "mAP", "mean_average_precision"),
        ("mINP", "mINP", "mean_inverse_negative_penalty"),
    ],
}


SAMPLER_NAMES = {
    "dis": "dynamic importance sampling (DIS)",
    "ftis": "fixed teacher importance sampling",
    "uniform": "uniform sampling",
    "topk": "the teacher's top classes (a biased baseline)",
}


@dataclass
class StudentCardData:
    """Everything a student's card states. Dict fields are free-form tables (name -> value) rendered in order.

    Args:
        task: ``image-classification`` or ``person-reidentification``.
        model_name: the card's title (the repo name).
        student: architecture, parameters, classes, input size and normalisation.
        teacher: name (path or Hub id), architecture, parameters; `hub_id` when it is on the Hub.
        distillation: the objective's settings (sampler, K, scope, estimator, correction, T, alpha, ...).
        sampler_state: the sampler's learned state at the end of training (the DIS mixture), or empty.
        training: hyper-parameters (learning rate, epochs, steps, batch, optimizer, ...).
        results: the student's last evaluation (metric key -> value, without the ``eval_`` prefix).
        teacher_results: the teacher's evaluation when known (its folder's eval_results.json).
        speed: steps/s and examples/s of the run, the device, and the head step time (full vs sampled).
        reid: the re-ID settings (P x K, triplet, distance), for re-ID students.
        dataset: the dataset's name or Hub id.
        license: an SPDX id for the metadata, or None.
        language: the metadata's language code(s), or None (images: usually none).
        tags: tags for the metadata besides the library's own (e.g. the model's `model_tags`).
    """

    task: str
    model_name: str
    student: dict[str, Any]
    teacher: dict[str, Any]
    distillation: dict[str, Any]
    training: dict[str, Any]
    results: dict[str, float] = field(default_factory=dict)
    sampler_state: dict[str, float] = field(default_factory=dict)
    teacher_results: dict[str, float] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    reid: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    license: str | None = None
    language: str | list[str] | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}.")

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CARD_DATA_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> StudentCardData:
        path = Path(folder) / CARD_DATA_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} has no {CARD_DATA_NAME}: it was not written by a DistillationTrainer (the file holds "
                "what the card states: teacher, settings, results)."
            )
        return cls(**json.loads(path.read_text()))


#: The tags every student's card carries.
LIBRARY_TAGS = ("knowledge-distillation", "hf_dis", "dynamic-importance-sampling")


def render_card(data: StudentCardData, repo_id: str | None = None) -> ModelCard:
    """The card: YAML metadata (license, library, tags, datasets, base model when the teacher is on the Hub,
    model-index with the results) and the body of the task's template. `repo_id` goes into the usage snippet."""
    metadata = ModelCardData(
        license=data.license,
        library_name="transformers",
        tags=list(dict.fromkeys([*LIBRARY_TAGS, data.task, "vision", *data.tags])),  # in order, each once
        language=data.language,
        datasets=[data.dataset] if data.dataset and "/" in data.dataset else None,
        base_model=data.teacher.get("hub_id"),
        model_name=data.model_name,
        pipeline_tag="image-classification" if data.task == "image-classification" else "image-feature-extraction",
        eval_results=_eval_results(data) or None,
    )
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    size = data.student.get("input size")
    height, width = (int(side) for side in size.split("x")) if size else (224, 224)
    body = environment.get_template(TASKS[data.task]).render(
        card=data,
        repo_id=repo_id or f"<user>/{data.model_name}",
        metrics=METRICS[data.task],
        citation=CITATION,
        sampler_names=SAMPLER_NAMES,
        percent=_percent,
        thousands=_thousands,
        input_height=height,
        input_width=width,
    )
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}")


def _eval_results(data: StudentCardData) -> list[EvalResult]:
    dataset = data.dataset or "unknown"
    dataset_type = dataset if "/" in dataset else re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-")
    return [
        EvalResult(
            task_type=data.task,
            dataset_type=dataset_type,
            dataset_name=dataset,
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(data.results[key]), 6),
        )
        for key, name, metric_type in METRICS[data.task]
        if key in data.results
    ]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _thousands(value: int | None) -> str:
    return "an unknown number of" if value is None else f"{value:,}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"
