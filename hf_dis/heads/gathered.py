"""Logits at a per-example class set, `logits[b, k] = <W[classes[b, k]], h[b]>`, computed a chunk of examples at a
time.

Written as `W[classes]` (`[B, K', d]`) and one batched product, autograd keeps the whole gathered block for the
backward, writes its gradient (another `[B, K', d]`) and scatters that into the weight's gradient with an
accumulating `index_put_`: at 10^4 classes, B = 128, K' = 202 and d = 512, several passes over 53 MB a step, and on
a CPU the gathered rows have left the caches before the product reads them. Here each chunk's rows are gathered into
a buffer of `CHUNK_BYTES`, used at once, and gathered again in the backward: nothing of size `[B, K', d]` is kept
between the passes. At that size on a CPU (2 threads, fp32) forward and backward took 21 ms instead of 87.

The weight's gradient is accumulated row by row: with `index_add_` on a CPU (in the order of the classes, so
deterministic), elsewhere with the accumulating `index_put_` that the indexing used before (CUDA's `index_add_` adds
with atomics, in no fixed order, so two runs would differ in their last bits). With `sparse_grad` it is a sparse COO
tensor over the gathered rows instead (uncoalesced, as `nn.Embedding(sparse=True)` makes it).

Under autocast the products run in the autocast dtype (as `torch.bmm` would); the weight's gradient is accumulated in
the weight's dtype.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

#: Bytes of gathered classifier rows per chunk: on a CPU about what its caches hold, so that the rows are still there
#: when the product reads them; on an accelerator large enough that a step runs few chunks (each launches a handful of
#: kernels), small enough to bound the memory the gather takes.
CHUNK_BYTES = {"cpu": 4 * 2**20}
ACCELERATOR_CHUNK_BYTES = 256 * 2**20


def gathered_logits(
    features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor, *, sparse_grad: bool = False
) -> torch.Tensor:
    """`[B, K']` logits of `features [B, d]` against the rows `classes [B, K']` of `weight [C, d]`, no bias.

    Args:
        sparse_grad: give `weight` a sparse gradient over the gathered rows instead of a dense `[C, d]` one.
    """
    if features.dim() != 2 or classes.dim() != 2 or classes.shape[0] != features.shape[0]:
        raise ValueError(
            f"features must be [B, d] and classes [B, K'], got {tuple(features.shape)} and {tuple(classes.shape)}."
        )
    return _GatheredLogits.apply(features, weight, classes, sparse_grad)


def compute_dtype(features: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the products: the autocast dtype under autocast, else the promotion of the two inputs."""
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(features.dtype, weight.dtype)


def chunk_rows(classes: torch.Tensor, width: int, dtype: torch.dtype) -> int:
    """Examples per chunk: as many as `CHUNK_BYTES` of gathered rows hold for this device (at least one)."""
    budget = CHUNK_BYTES.get(classes.device.type, ACCELERATOR_CHUNK_BYTES)
    row_bytes = max(classes.shape[1], 1) * width * torch.empty((), dtype=dtype).element_size()
    return max(1, budget // row_bytes)


class _GatheredLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, classes, sparse_grad):
        dtype = compute_dtype(features, weight)
        ctx.dtype, ctx.sparse_grad = dtype, sparse_grad
        ctx.save_for_backward(features, weight, classes)
        logits = torch.empty(classes.shape, dtype=dtype, device=features.device)
        scratch = _ChunkScratch(classes, weight, dtype)
        with torch.autocast(features.device.type, enabled=False):
            for chunk in scratch.chunks:
                rows = scratch.gather(weight, classes[chunk])
                torch.bmm(rows, features[chunk].to(dtype).unsqueeze(-1), out=logits[chunk].unsqueeze(-1))
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logits):
        features, weight, classes = ctx.saved_tensors
        dtype, num_sampled = ctx.dtype, classes.shape[1]
        grad_logits = grad_logits.to(dtype)
        want_features, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_features = torch.empty(features.shape, dtype=dtype, device=features.device) if want_features else None
        grad_weight = values = None
        if want_weight and ctx.sparse_grad:
            values = weight.new_empty(classes.numel(), weight.shape[1])
        elif want_weight:
            grad_weight = torch.zeros_like(weight)
        accumulate_in_order = weight.device.type == "cpu"
        scratch = _ChunkScratch(classes, weight, dtype)
        with torch.autocast(features.device.type, enabled=False):
            for chunk in scratch.chunks:
                grad = grad_logits[chunk]
                if want_features:
                    rows = scratch.gather(weight, classes[chunk])
                    torch.bmm(grad.unsqueeze(1), rows, out=grad_features[chunk].unsqueeze(1))
                if not want_weight:
                    continue
                entries = slice(chunk.start * num_sampled, chunk.stop * num_sampled)
                outer = scratch.outer(grad, features[chunk].to(dtype), None if values is None else values[entries])
                if values is None and accumulate_in_order:
                    grad_weight.index_add_(0, classes[chunk].flatten(), outer)
                elif values is None:
                    grad_weight.index_put_((classes[chunk].flatten(),), outer, accumulate=True)
        if values is not None:
            grad_weight = torch.sparse_coo_tensor(
                classes.flatten().unsqueeze(0), values, weight.shape, check_invariants=False
            )  # the ids were checked by index_select
        if grad_features is not None:
            grad_features = grad_features.to(features.dtype)
        return grad_features, grad_weight, None, None


class _ChunkScratch:
    """The chunks of a call and one chunk's worth of row buffers, reused by every chunk: a call allocates them once
    (an allocator that hands large blocks back to the system would otherwise fault their pages in again per chunk)."""

    def __init__(self, classes: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> None:
        num_examples, self.num_sampled = classes.shape
        step = chunk_rows(classes, weight.shape[1], dtype)
        self.chunks = [slice(start, min(start + step, num_examples)) for start in range(0, num_examples, step)]
        entries = min(step, num_examples) * self.num_sampled
        self.weight_rows = weight.new_empty(entries, weight.shape[1])  # in the weight's dtype
        self.compute_rows = self.weight_rows if dtype == weight.dtype else self.weight_rows.to(dtype)

    def gather(self, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """`[n, K', d]`: the rows of `classes [n, K']`, in the compute dtype."""
        rows = torch.index_select(weight, 0, classes.flatten(), out=self.weight_rows[: classes.numel()])
        if self.compute_rows is not self.weight_rows:
            rows = self.compute_rows[: classes.numel()].copy_(rows)
        return rows.view(classes.shape[0], self.num_sampled, -1)

    def outer(self, grad: torch.Tensor, features: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """`[n K', d]` in the weight's dtype: grad[b, k] * features[b], the weight's gradient at each gathered row
        (written into `out` when given)."""
        count = grad.numel()
        same_dtype = self.compute_rows is self.weight_rows
        target = out if out is not None and same_dtype else self.compute_rows[:count]
        product = torch.mul(grad.unsqueeze(-1), features.unsqueeze(1), out=target.view(*grad.shape, -1))
        if same_dtype:
            return product.view(count, -1)
        return (self.weight_rows[:count] if out is None else out).copy_(product.view(count, -1))
