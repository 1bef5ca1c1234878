"""Logits at a per-example class set, `logits[b, k] = <W[classes[b, k]], h[b]>`, computed a chunk of examples at a
time.

Written as `W[classes]` (`[B, K', d]`) and one batched product, autograd keeps the whole gathered block for the
backward, writes its gradient (another `[B, K', d]`) and scatters that into the weight's gradient with an
accumulating `index_put_`: several passes over a block the size of B x K' classifier rows, and on a CPU the gathered
rows have left the caches before the product reads them. Here each chunk's rows are gathered into a buffer of
`CHUNK_BYTES`, used at once, and gathered again in the backward: nothing of size `[B, K', d]` is kept between the
passes.

The weight's gradient is accumulated row by row: with `index_add_` on a CPU (in the order of the classes, so
deterministic), elsewhere with the accumulating `index_put_` that the indexing used before (CUDA's `index_add_` adds
with atomics, in no fixed order, so two runs would differ in their last bits). With `sparse_grad` it is a sparse COO
tensor over the distinct rows used, accumulated the same way into one `[U, d]` block: one entry per row, not one per
gathered row (`[B x K', d]`, as `nn.Embedding(sparse=True)` gives), so the optimizer's coalescing has U rows to sort
(autograd's copy into `.grad` drops the coalesced flag), not B x K' to sort and sum.

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
    features: torch.Tensor,
    weight: torch.Tensor,
    classes: torch.Tensor,
    *,
    sparse_grad: bool = False,
    union: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`[B, K']` logits of `features [B, d]` against the rows `classes [B, K']` of `weight [C, d]`, no bias.

    Args:
        sparse_grad: give `weight` a sparse gradient over the distinct rows of `classes` (one entry per row,
            summed), instead of a dense `[C, d]` one.
        union: `torch.unique(classes, return_inverse=True)` when the caller has it (with `sparse_grad`; else it is
            found here, which on an accelerator makes the host wait for the device).
    """
    if features.dim() != 2 or classes.dim() != 2 or classes.shape[0] != features.shape[0]:
        raise ValueError(
            f"features must be [B, d] and classes [B, K'], got {tuple(features.shape)} and {tuple(classes.shape)}."
        )
    if sparse_grad and union is None:
        union = torch.unique(classes, return_inverse=True)
    rows, position = union if sparse_grad else (None, None)
    return _GatheredLogits.apply(features, weight, classes, rows, position)


def compute_dtype(features: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the products: the autocast dtype under autocast, else the promotion of the two inputs."""
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(features.dtype, weight.dtype)


def chunk_rows(classes: torch.Tensor, width: int, dtype: torch.dtype) -> int:
    """Examples per chunk: as many as `CHUNK_BYTES` of gathered rows hold for this device (at least one)."""
    budget = CHUNK_BYTES.get(classes.device.type, ACCELERATOR_CHUNK_BYTES)
    row_bytes = max(classes.shape[1], 1) * width * dtype.itemsize
    return max(1, budget // row_bytes)


class _GatheredLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, classes, sparse_rows, sparse_position):
        dtype = compute_dtype(features, weight)
        ctx.dtype = dtype
        ctx.save_for_backward(features, weight, classes, sparse_rows, sparse_position)
        logits = torch.empty(classes.shape, dtype=dtype, device=features.device)
        scratch = _ChunkScratch(classes, weight, dtype)
        with torch.autocast(features.device.type, enabled=False):
            for chunk in scratch.chunks:
                rows = scratch.gather(weight, classes[chunk])
                _row_products(rows, features[chunk].to(dtype), out=logits[chunk])
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logits):
        features, weight, classes, sparse_rows, sparse_position = ctx.saved_tensors
        dtype = ctx.dtype
        grad_logits = grad_logits.to(dtype)
        want_features, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_features = torch.empty(features.shape, dtype=dtype, device=features.device) if want_features else None
        # The weight's gradient: dense [C, d] at `classes`, or the values [U, d] of a sparse one at the positions of
        # `classes` among its distinct rows.
        sparse, grad_rows, where = sparse_rows is not None, None, None
        if want_weight:
            grad_rows = weight.new_zeros(sparse_rows.numel(), weight.shape[1]) if sparse else torch.zeros_like(weight)
            where = sparse_position if sparse else classes
        scratch = _ChunkScratch(classes, weight, dtype)
        with torch.autocast(features.device.type, enabled=False):
            for chunk in scratch.chunks:
                grad = grad_logits[chunk]
                if want_features:
                    rows = scratch.gather(weight, classes[chunk])
                    torch.bmm(grad.unsqueeze(1), rows, out=grad_features[chunk].unsqueeze(1))
                if want_weight:
                    _add_rows(grad_rows, where[chunk].flatten(), scratch.outer(grad, features[chunk].to(dtype)))
        grad_weight = grad_rows
        if want_weight and sparse:
            grad_weight = torch.sparse_coo_tensor(
                sparse_rows.unsqueeze(0), grad_rows, weight.shape, is_coalesced=True, check_invariants=False
            )  # distinct sorted ids (torch.unique), in range (index_select checked them)
        if grad_features is not None:
            grad_features = grad_features.to(features.dtype)
        return grad_features, grad_weight, None, None, None


def _row_products(rows: torch.Tensor, features: torch.Tensor, out: torch.Tensor) -> None:
    """out[b, k] = <rows[b, k], features[b]>: on a CPU as a product and a sum over d (a batch of matrix-vector
    products in `torch.bmm` runs several times slower there), elsewhere with `torch.bmm`."""
    if rows.device.type == "cpu":
        torch.linalg.vecdot(rows, features.unsqueeze(1), out=out)
    else:
        torch.bmm(rows, features.unsqueeze(-1), out=out.unsqueeze(-1))


def _add_rows(target: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """target[index[i]] += rows[i]: in order on a CPU (`index_add_`, deterministic), with the accumulating
    `index_put_` elsewhere (CUDA's `index_add_` adds with atomics, in no fixed order)."""
    if target.device.type == "cpu":
        target.index_add_(0, index, rows)
    else:
        target.index_put_((index,), rows, accumulate=True)


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

    def outer(self, grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """`[n K', d]` in the weight's dtype: grad[b, k] * features[b], the weight's gradient at each gathered row."""
        count = grad.numel()
        product = torch.mul(
            grad.unsqueeze(-1), features.unsqueeze(1), out=self.compute_rows[:count].view(*grad.shape, -1)
        )
        if self.compute_rows is self.weight_rows:
            return product.view(count, -1)
        return self.weight_rows[:count].copy_(product.view(count, -1))
