"""`ImprintHeadCallback`: at the end of training, the classifier's rows are set from the training set's class-mean
features (weight imprinting, `hf_dis.heads.imprint`), before the final evaluation and the save.

One pass over the training images (given with the evaluation transform: the class means of the images as they are,
not of random crops; read in a seeded order), the model in eval mode and the head restricted to one class, so that
the `[B, C]` logits are never formed. Under DDP every process reads its share, the sums are added across processes
and rank 0's fitted scale is used by all, so that every process holds the head that is saved.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from tqdm.auto import tqdm
from transformers import TrainerCallback

from hf_dis.heads import install_sampled_head, split_classifier
from hf_dis.heads.imprint import ClassFeatureSums, fit_sample_size, fit_imprint, set_imprinted_rows
from hf_dis.trainer.row_sparse_updates import broadcast_from_main_process

logger = logging.getLogger(__name__)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ImprintHeadCallback(TrainerCallback):
    """Imprint the classifier when training ends (see the module docstring). The scale, and how the trained and the
    imprinted head rank the fitting sample and the evaluation images, are logged, kept in `self.report` and written
    to `imprint_results.json` in the output folder.

    Args:
        dataset: the training images with the evaluation transform (items with `pixel_values` and `labels`), read in
            batches of `per_device_eval_batch_size`.
        eval_dataset: images to compare the two heads on (the run's evaluation set); None: no comparison. Only
            reported: the imprinted head is kept either way.
        seed: the order in which `dataset` is read (the scale is fitted on the first examples read).
    """

    def __init__(self, dataset: Dataset, eval_dataset: Dataset | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.eval_dataset = eval_dataset
        self.seed = seed
        self.report: dict[str, float] = {}

    def _batches(self, dataset: Dataset, args) -> DataLoader:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))
        if _distributed():
            order = order[dist.get_rank():: dist.get_world_size()]
        return DataLoader(Subset(dataset, order.tolist()), batch_size=args.per_device_eval_batch_size,
                          num_workers=args.dataloader_num_workers, collate_fn=default_collate)  # fmt: skip

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("ImprintHeadCallback needs the Trainer's model when training ends.")
        head = install_sampled_head(model)  # idempotent; restricted below so that no [B, C] logits are formed
        stats = ClassFeatureSums.zeros(head.out_features, head.in_features, head.weight.device)
        sample_size = fit_sample_size(head.out_features)
        sample: list[tuple[torch.Tensor, torch.Tensor]] = []
        for features, labels in _features(model, head, self._batches(self.dataset, args), "imprinting the classifier",
                                          args.disable_tqdm):  # fmt: skip
            stats.add(features, labels)
            if sum(len(labels) for _, labels in sample) < sample_size:
                sample.append((features, labels))
        evaluation = None
        if self.eval_dataset is not None:
            evaluation = list(_features(model, head, self._batches(self.eval_dataset, args), "the two heads compared",
                                        args.disable_tqdm))  # fmt: skip
        if _distributed():
            dist.all_reduce(stats.sums)
            dist.all_reduce(stats.counts)
        features = torch.cat([features for features, _ in sample])[:sample_size]
        labels = torch.cat([labels for _, labels in sample])[:sample_size]
        report = {"sample_top1_trained_head": _top1(head, [(features, labels)])}
        if evaluation is not None:
            report["eval_top1_trained_head"] = _top1(head, evaluation)
        fit = fit_imprint(stats, features, labels)
        scale = torch.tensor(fit.scale, dtype=torch.float64, device=features.device)
        broadcast_from_main_process(scale)  # rank 0's: every process must hold the head that is saved
        set_imprinted_rows(head, stats, float(scale))
        report.update(scale=float(scale), sample_top1_imprinted_left_out=fit.top1,
                      classes_imprinted=int((stats.counts > 0).sum()))  # fmt: skip
        if evaluation is not None:
            report["eval_top1_imprinted"] = _top1(head, evaluation)
        self.report = report
        compared = ""
        if evaluation is not None:
            compared = (f"; on the evaluation set, top-1 {100 * report['eval_top1_trained_head']:.2f}% trained and "
                        f"{100 * report['eval_top1_imprinted']:.2f}% imprinted")  # fmt: skip
        logger.warning(
            "imprinted %d of the classifier's %d rows from class-mean features (scale %.3g). On %d training images: "
            "top-1 %.2f%% with the trained head, %.2f%% imprinted with each image left out of its class mean (%d "
            "images whose class has another)%s", report["classes_imprinted"], head.out_features, float(scale),
            len(labels), 100 * report["sample_top1_trained_head"], 100 * fit.top1, fit.examples, compared,
        )  # fmt: skip
        if state.is_world_process_zero:
            Path(args.output_dir, "imprint_results.json").write_text(json.dumps(report, indent=2) + "\n")


def _features(model, head, batches: DataLoader, description: str, disable_tqdm: bool):
    """`(features [B, d] float32, labels [B])` of each batch (`SplitClassifier.features`), the model in eval mode and
    its head restricted to one class."""
    split = split_classifier(model)
    was_training = model.training
    model.eval()
    device = head.weight.device
    try:
        with torch.no_grad(), head.restricted_to(torch.zeros(1, dtype=torch.long, device=device)):
            for batch in tqdm(batches, desc=description, disable=disable_tqdm):
                yield split.features(batch["pixel_values"].to(device)).float(), batch["labels"].to(device)
    finally:
        model.train(was_training)


#: Rows of `[n, C]` logits `_top1` forms at once.
_TOP1_CHUNK = 256


def _top1(head: nn.Linear, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The head's top-1 over `(features, labels)` pairs, counted across processes."""
    counts = torch.zeros(2, dtype=torch.float64, device=head.weight.device)
    with torch.no_grad():
        for features, labels in pairs:
            for start in range(0, len(labels), _TOP1_CHUNK):
                logits = F.linear(features[start:start + _TOP1_CHUNK], head.weight, head.bias)
                counts[0] += (logits.argmax(1) == labels[start:start + _TOP1_CHUNK]).sum()
            counts[1] += len(labels)
    if _distributed():
        dist.all_reduce(counts)
    return float(counts[0] / counts[1].clamp_min(1))
