"""`IdentitySampler`: P x K batches (P identities, K images of each) for re-ID training with the triplet loss, as a
plain `torch.utils.data.Sampler` that the Trainer and Accelerate shard across processes.

Layout of the index stream: one epoch is a sequence of *steps*; a step holds `num_replicas` blocks of P x K indices,
with `num_replicas x P` distinct identities across them. With a per-process batch of P x K, Accelerate hands block r
of every step to process r (it deals whole batches round-robin), so no identity is split across processes and no
two processes see the same identity in a step.

Draws: each identity's images are consumed in a shuffled cyclic order (reshuffled when used up), so an identity with
fewer than K images repeats some of them within its K: it is drawn with replacement, as torchreid's and fast-reid's
samplers do; the constructor warns how many identities that concerns. Identities are chosen per step without
replacement, with probability proportional to their number of K-image chunks (as in those samplers, where an identity
takes part once per chunk). An epoch has `len(dataset) // (num_replicas x P x K)` steps (at least one), and its order
depends only on (seed, epoch): `set_epoch` is called by the Trainer, and a resumed run sees the same batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


class IdentitySampler(torch.utils.data.Sampler[int]):
    """Indices in blocks of `identities_per_batch` (P) identities x `instances_per_identity` (K) images.

    Args:
        labels: the identity of each dataset row.
        instances_per_identity: K (>= 2 for the triplet loss to find positives).
        identities_per_batch: P, per process.
        num_replicas: the number of processes that share the stream (the Trainer passes its world size).
        seed: with the epoch, determines the whole order.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        instances_per_identity: int,
        identities_per_batch: int,
        *,
        num_replicas: int = 1,
        seed: int = 0,
    ) -> None:
        if instances_per_identity < 1 or identities_per_batch < 1 or num_replicas < 1:
            raise ValueError(
                "instances_per_identity, identities_per_batch and num_replicas must be >= 1, got "
                f"{instances_per_identity}, {identities_per_batch} and {num_replicas}."
            )
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        identities, inverse = np.unique(labels, return_inverse=True)
        per_step = identities_per_batch * num_replicas
        if len(identities) < per_step:
            raise ValueError(
                f"a step needs {per_step} distinct identities ({identities_per_batch} per batch x {num_replicas} "
                f"processes) but the dataset has {len(identities)}; lower the batch size or raise "
                "instances_per_identity."
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(identities)))[:-1]
        self._rows: list[np.ndarray] = np.split(order, bounds)
        sizes = np.array([len(rows) for rows in self._rows])
        short = int((sizes < instances_per_identity).sum())
        if short:
            logger.warning(
                "%d of %d identities have fewer than %d images: their images are repeated within a batch (drawn with "
                "replacement).",
                short,
                len(identities),
                instances_per_identity,
            )
        chunks = np.maximum(sizes // instances_per_identity, 1)
        self._weights = chunks / chunks.sum()
        self.instances_per_identity = instances_per_identity
        self.identities_per_batch = identities_per_batch
        self.num_replicas = num_replicas
        self.seed = seed
        self.epoch = 0
        self.num_steps = max(len(labels) // (per_step * instances_per_identity), 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_steps * self.num_replicas * self.identities_per_batch * self.instances_per_identity

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queues = [rng.permutation(rows) for rows in self._rows]
        positions = np.zeros(len(queues), dtype=np.int64)
        k, per_step = self.instances_per_identity, self.identities_per_batch * self.num_replicas
        for _ in range(self.num_steps):
            for identity in rng.choice(len(queues), size=per_step, replace=False, p=self._weights):
                yield from self._take(identity, queues, positions, k, rng)

    @staticmethod
    def _take(identity: int, queues: list[np.ndarray], positions: np.ndarray, k: int, rng) -> list[int]:
        """The next K rows of `identity`'s cyclic shuffled order, reshuffling each time it is used up."""
        taken: list[int] = []
        while len(taken) < k:
            queue, start = queues[identity], positions[identity]
            piece = queue[start : start + k - len(taken)]
            taken.extend(int(row) for row in piece)
            positions[identity] = start + len(piece)
            if positions[identity] == len(queue):
                queues[identity], positions[identity] = rng.permutation(queue), 0
        return taken
