"""Row-sparse (lazy) optimizers for a classifier trained on sampled classes: `RowSparseSGD` and `RowSparseAdamW`.

On a sampled step the classifier's gradient is zero outside the rows of the sampled classes S, yet a dense optimizer
with momentum or weight decay reads and writes all C rows of the weight and of each moment buffer: at 10^6 classes
that traffic costs more than the sampled head itself. These optimizers take the rows to update (`step(rows)`) and
read and write only those rows of the parameter, its gradient and its state. The gradient may be dense or sparse
(`torch.sparse_coo`, as `nn.Embedding(sparse=True)` and `subset_logits(..., sparse_grad=True)` make it): with a sparse
gradient and no rows given, a step updates the rows of that gradient.

Semantics for the rows a step skips (lazy updates, as `torch.optim.SparseAdam`): nothing happens to them. Their
momentum / moment estimates do not decay, weight decay is not applied, and each row keeps its own step count, so a
row is updated exactly as the dense optimizer would update it if the steps that skipped it had not happened
(tested). Updating every row (dense gradients, no rows given), the optimizers equal `torch.optim.SGD` / `AdamW`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def coalesced(grad: torch.Tensor) -> torch.Tensor:
    """`grad.coalesce()` of a sparse row gradient, without its sort when the rows are already distinct and in order
    (as `gathered_logits` writes them): autograd's copy into `.grad`, and in-place scaling such as gradient clipping,
    drop the coalesced flag but not the order, and re-sorting U rows of d values costs as much as a row-sparse step."""
    if grad.is_coalesced():
        return grad
    indices = grad._indices()
    if indices.shape[0] == 1 and bool((indices[0, 1:] > indices[0, :-1]).all()):
        return torch.sparse_coo_tensor(indices, grad._values(), grad.shape, is_coalesced=True, check_invariants=False)
    return grad.coalesce()


def _gradient_rows(grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`grad` at `rows` as a dense `[len(rows), ...]` tensor; a sparse `grad` must have no row outside `rows`."""
    if not grad.is_sparse:
        return grad.index_select(0, rows)
    grad = coalesced(grad)
    indices, values = grad.indices()[0], grad.values()
    if torch.equal(indices, rows):
        return values
    positions = torch.searchsorted(rows, indices).clamp_(max=max(rows.numel() - 1, 0))
    if rows.numel() == 0 or not torch.equal(rows[positions], indices):
        raise ValueError("a sparse gradient has rows outside the rows to update (rows must be sorted and cover them).")
    return values.new_zeros((rows.numel(), *values.shape[1:])).index_add_(0, positions, values)


class _RowSparseOptimizer(torch.optim.Optimizer):
    """Shared plumbing: parameters whose first dimension is the class (weight `[C, d]`, bias `[C]`), all with the
    same C; `step(rows)` hands each parameter's touched rows to `_update_rows`."""

    def __init__(self, params: Iterable[torch.Tensor], defaults: dict) -> None:
        super().__init__(params, defaults)
        sizes = {p.shape[0] for group in self.param_groups for p in group["params"]}
        if len(sizes) != 1:
            raise ValueError(f"row-sparse parameters must share their first (class) dimension, got sizes {sizes}.")

    @torch.no_grad()
    def step(self, rows: torch.Tensor | None = None, closure=None):
        """Update `rows` (a sorted 1-D tensor of distinct row indices) of every parameter that has a gradient.
        `rows=None`: the rows of the first sparse gradient (all the parameters share them: a bias's dense gradient
        is read at the weight's rows), or every row when no gradient is sparse."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [(p, group) for group in self.param_groups for p in group["params"] if p.grad is not None]
        for param, _ in params:
            if param.grad.is_sparse:
                param.grad = coalesced(param.grad)  # once here, not per use
        rows_of = None  # the parameter whose sparse gradient gave the rows: its values are those rows' gradient
        if rows is None:
            rows_of = next((p for p, _ in params if p.grad.is_sparse), None)
            rows = None if rows_of is None else rows_of.grad.indices()[0]
        for param, group in params:
            index = torch.arange(param.shape[0], device=param.device) if rows is None else rows.to(param.device)
            # No comparison of the gradient's rows with themselves: it would cost a host-device synchronisation.
            grad = param.grad.values() if param is rows_of else _gradient_rows(param.grad, index)
            self._update_rows(param, index, grad, group, self.state[param])
        return loss

    def _update_rows(
        self, param: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, group: dict, state: dict
    ) -> None:
        """Update `param[rows]` from `grad` (the gradient at those rows, `[len(rows), ...]`) and `state`."""
        raise NotImplementedError

    @staticmethod
    def _row_steps(state: dict, param: torch.Tensor) -> torch.Tensor:
        """`[C]` int64 updates of each row. Kept under the key "step", which `Optimizer.load_state_dict` does not cast
        to the parameter's dtype (a float count would drift in bf16)."""
        if "step" not in state:
            state["step"] = torch.zeros(param.shape[0], dtype=torch.long, device=param.device)
        elif state["step"].device != param.device:
            state["step"] = state["step"].to(param.device)
        return state["step"]


class RowSparseSGD(_RowSparseOptimizer):
    """SGD with momentum (and optional Nesterov momentum and L2 weight decay, as `torch.optim.SGD`), row-sparse."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}.")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0.")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov})

    def _update_rows(
        self, param: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, group: dict, state: dict
    ) -> None:
        values = param.index_select(0, rows)
        direction = grad
        if group["weight_decay"]:
            direction = direction.add(values, alpha=group["weight_decay"])
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param)
            row_steps = self._row_steps(state, param)
            buffer = state["momentum_buffer"].index_select(0, rows)
            first = (row_steps.index_select(0, rows) == 0).view(-1, *([1] * (param.dim() - 1)))
            # torch.optim.SGD starts a buffer at the first direction itself
            buffer = torch.where(first, direction, buffer.mul_(group["momentum"]).add_(direction))
            state["momentum_buffer"].index_copy_(0, rows, buffer)
            row_steps.index_add_(0, rows, torch.ones_like(rows))
            direction = direction.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        param.index_copy_(0, rows, values.add_(direction, alpha=-group["lr"]))


class RowSparseAdamW(_RowSparseOptimizer):
    """AdamW (decoupled weight decay, as `torch.optim.AdamW`), row-sparse, with a bias correction per row (from the
    number of steps that updated that row).

    `row_wise_second_moment=True` keeps one second-moment estimate per row, the moving average of the row's mean
    squared gradient, instead of one per entry (fbgemm's "partial row-wise Adam" for embedding tables): every entry of
    a row then shares one adaptive step size, and the optimizer's state is one `[C, d]` buffer instead of two (C x d
    floats less). Not AdamW any more: an option for classifiers whose state
    does not fit.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        row_wise_second_moment: bool = False,
    ) -> None:
        if lr < 0 or eps <= 0 or weight_decay < 0 or not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"invalid AdamW settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}.")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, {**defaults, "row_wise_second_moment": row_wise_second_moment})

    def _update_rows(
        self, param: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, group: dict, state: dict
    ) -> None:
        row_wise = group.get("row_wise_second_moment", False)  # absent from states saved before the option
        row_shape = (-1, *([1] * (param.dim() - 1)))  # a value per row, broadcast over the row's entries
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = param.new_zeros(param.shape[:1]) if row_wise else torch.zeros_like(param)
        row_steps = self._row_steps(state, param)
        beta1, beta2 = group["betas"]
        row_steps.index_add_(0, rows, torch.ones_like(rows))
        steps = row_steps.index_select(0, rows).to(param.dtype).view(row_shape)
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(grad, 1 - beta1)
        squared = grad.square().flatten(1).mean(1) if row_wise and grad.dim() > 1 else grad.square()
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).add_(squared, alpha=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        if row_wise:
            exp_avg_sq = exp_avg_sq.view(row_shape)
        bias_correction1 = 1 - beta1**steps
        bias_correction2_sqrt = (1 - beta2**steps).sqrt()
        denominator = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        values = param.index_select(0, rows).mul_(1 - group["lr"] * group["weight_decay"])
        values.addcdiv_(exp_avg / bias_correction1, denominator, value=-group["lr"])
        param.index_copy_(0, rows, values)
