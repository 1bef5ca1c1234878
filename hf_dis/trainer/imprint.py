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
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from tqdm.auto import tqdm
from transformers import TrainerCallback

from hf_dis.heads import install_sampled_head
from hf_dis.heads.imprint import ClassFeatureSums, fit_sample_size, fit_imprint, set_imprinted_rows

logger = logging.getLogger(__name__)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ImprintHeadCallback(TrainerCallback):
    """Imprint the classifier when training ends (see the module docstring); the scale and how the head ranks the
    fitting sample before and after are logged, kept in `self.report` and written to `imprint_results.json` in the
    output folder.

    Args:
        dataset: the training images with the evaluation transform (items with `pixel_values` and `labels`), read in
            batches of `per_device_eval_batch_size`.
        seed: the order in which `dataset` is read (the scale is fitted on the first examples read).
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed
        self.report: dict[str, float] = {}

    def _batches(self, args) -> DataLoader:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed))
        if _distributed():
            order = order[dist.get_rank():: dist.get_world_size()]
        return DataLoader(Subset(self.dataset, order.tolist()), batch_size=args.per_device_eval_batch_size,
                          num_workers=args.dataloader_num_workers, collate_fn=default_collate)  # fmt: skip

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("ImprintHeadCallback needs the Trainer's model when training ends.")
        batches = self._batches(args)
        head = install_sampled_head(model)  # idempotent; restricted below so that no [B, C] logits are formed
        stats = ClassFeatureSums.zeros(head.out_features, head.in_features, head.weight.device)
        sample_size = fit_sample_size(head.out_features)
        sample: list[tuple[torch.Tensor, torch.Tensor]] = []
        captured: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), head.restricted_to(torch.zeros(1, dtype=torch.long, device=head.weight.device)):
                for batch in tqdm(batches, desc="imprinting the classifier", disable=args.disable_tqdm):
                    model(batch["pixel_values"].to(head.weight.device))  # timm models take no keyword
                    features, labels = captured.pop().float(), batch["labels"].to(head.weight.device)
                    stats.add(features, labels)
                    if sum(len(labels) for _, labels in sample) < sample_size:
                        sample.append((features, labels))
        finally:
            hook.remove()
            model.train(was_training)
        if _distributed():
            dist.all_reduce(stats.sums)
            dist.all_reduce(stats.counts)
        features = torch.cat([features for features, _ in sample])[:sample_size]
        labels = torch.cat([labels for _, labels in sample])[:sample_size]
        trained = torch.nn.functional.linear(features, head.weight, head.bias).argmax(1) == labels
        fit = fit_imprint(stats, features, labels)
        scale = torch.tensor(fit.scale, dtype=torch.float64, device=features.device)
        if _distributed():  # rank 0's: every process must hold the head that is saved
            dist.broadcast(scale, src=0)
        set_imprinted_rows(head, stats, float(scale))
        self.report = {"scale": float(scale), "sample_top1_trained_head": float(trained.float().mean()),
                       "sample_top1_imprinted_left_out": fit.top1,
                       "classes_imprinted": int((stats.counts > 0).sum())}  # fmt: skip
        logger.warning(
            "imprinted %d of the classifier's %d rows from class-mean features (scale %.3g). On %d training images: "
            "top-1 %.2f%% with the trained head; %.2f%% imprinted, each image left out of its class mean (%d images "
            "whose class has another)", self.report["classes_imprinted"], head.out_features, float(scale),
            len(labels), 100 * self.report["sample_top1_trained_head"], 100 * fit.top1, fit.examples,
        )  # fmt: skip
        if state.is_world_process_zero:
            Path(args.output_dir, "imprint_results.json").write_text(json.dumps(self.report, indent=2) + "\n")
