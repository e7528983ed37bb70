"""The inverse-free Kronecker-factored natural-gradient update of Lin et al. (ICML 2023), as plain functions.

The paper ("Simplifying Momentum-based Positive-definite Submanifold Optimization with Applications to Deep
Learning", arXiv:2302.09738) keeps, for every linear or convolutional layer with matrix gradient ``G`` (``d x p``:
outputs by inputs, the bias as a last input column), two square factors ``K`` (``p x p``) and ``C`` (``d x d``)
whose products approximate the inverse of the layer's Kronecker-factored Fisher,

    S_K^-1 ~= K K^T,   S_C^-1 ~= C C^T,   preconditioned gradient  C C^T G K K^T.

The factors move in the paper's generalized Riemannian normal coordinates, where the affine-invariant metric is the
identity: the natural gradient of ``K`` at the current point is the plain matrix (Sec. 4, the Kronecker case of
Sec. 5)

    n_K = 1/2 [ K^T ( lambda tr(C^T C)/d  K  +  tr(C^T H_C C)/d  H_K K ) - I_p ],

(and ``n_C`` with the roles of ``K`` and ``C``, ``p`` and ``d`` swapped), with heavy-ball momentum on it and a
first-order truncated exponential map back:

    m_K <- alpha_1 m_K + sym(n_K),     K <- K (I - beta_1 m_K).

No matrix inverse, decomposition or solve appears anywhere: only matrix products, which is why the update runs in
low precision. ``H_K`` and ``H_C`` are the KFAC curvature factors of the layer input and the output gradient. The
parameters then take SGD-with-momentum steps on the preconditioned gradient (weight decay added to it).

Everything here is transcribed from the authors' code, ``yorkerlin/StructuredNGD-DL``: ``optimizers/local_cov.py``
(``LocalOptimizer``: ``_update_local``, ``_update_natural_grad``, ``_step``, ``step``) and ``utils/kfac_utils.py``
(``ComputeCovA``, ``ComputeCovG``); each function below names the lines it follows. The names in the paper / the
code: ``K``/``A``, ``C``/``B``, ``alpha_1``/``beta2`` (factor momentum), ``beta_1``/``lr_cov`` (factor step),
``lambda``/``damping``, ``alpha_2``/``momentum``, ``beta_2``/``lr``. The SINGD follow-up (Lin et al., 2024) calls
this dense update INGD and tests its own optimizer against ``local_cov.py``.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "StructuredNGD",
    "factor_lr",
    "factor_natural_gradients",
    "input_factor",
    "kronecker_factors",
    "layer_rows",
    "matrix_gradient",
    "output_factor",
    "precondition",
    "supported",
    "update_factor_",
]


# -- which layers are preconditioned ---------------------------------------------------------------------------
def supported(module: nn.Module) -> bool:
    """Whether the update preconditions ``module``: ``nn.Linear`` and ``nn.Conv2d`` (the reference's
    ``known_modules = {'Linear', 'Conv2d'}``, local_cov.py ``__init__``). Convolutions need zero padding given as
    numbers (the reference pads with zeros by hand); any other parameter takes the reference's fallback, SGD with
    momentum."""
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return isinstance(module, nn.Linear)


# -- the Kronecker curvature factors (utils/kfac_utils.py) --------------------------------------------------------
def layer_rows(module: nn.Module, x: torch.Tensor, bias: bool) -> tuple[torch.Tensor, int, int]:
    """The layer input as rows ``a`` (``N x p``, a last column of ones when the layer has a trained bias), the batch
    size ``B`` and the number ``L`` of positions per sample (``N = B L``).

    Linear: ``L = 1`` for a 2-D input (``ComputeCovA.linear``). Conv2d: one row per output position, the receptive
    field flattened in the weight's ``(channel, kh, kw)`` order (``_extract_patches``); with ``groups > 1`` the
    reference averages the patch over the groups, and so do we. A linear layer applied to ``B x ... x p`` inputs
    (the reference raises) is treated as the reference treats a convolution: each of the ``L`` leading positions
    of a sample is one row.
    """
    if isinstance(module, nn.Conv2d):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        batch = x.shape[0]
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # B x Ck^2 x L
        positions = patches.shape[-1]
        rows = patches.transpose(1, 2).reshape(batch * positions, -1)
        if module.groups > 1:
            rows = rows.reshape(rows.shape[0], module.groups, -1).mean(1)
    else:
        if x.dim() == 1:
            x = x.unsqueeze(0)
        batch = x.shape[0]
        positions = math.prod(x.shape[1:-1])
        rows = x.reshape(-1, x.shape[-1])
    if bias:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows, batch, positions


def input_factor(rows: torch.Tensor, batch: int, positions: int) -> torch.Tensor:
    """``H_K = (a / L)^T (a / L) / B`` (``ComputeCovA.linear`` / ``.conv2d``: the rows, bias column included, are
    divided by the number of positions ``L``, then ``a^T a / batch_size``). For a linear layer on 2-D inputs this is
    the mean of ``[x; 1][x; 1]^T`` over the batch."""
    if positions != 1:
        rows = rows / positions
    return rows.t() @ (rows / batch)


def output_factor(grads: torch.Tensor, batch: int, positions: int, batch_averaged: bool = True,
                  convolution: bool = False) -> torch.Tensor:
    """``H_C`` from the gradient of the loss with respect to the layer output, as rows ``g`` (``N x d``).

    ``ComputeCovG.linear``: ``g^T (g B)`` when the loss is a batch mean (``batch_averaged``; the per-sample gradient
    is ``B g``, so this is the mean of its outer product), else ``g^T (g / B)``. ``ComputeCovG.conv2d`` (also used
    for a linear layer with ``L > 1`` positions): ``g <- g B`` (batch averaged), ``g <- g L``, then ``g^T g / N``.
    """
    if convolution or positions != 1:
        if batch_averaged:
            grads = grads * batch
        grads = grads * positions
        return grads.t() @ (grads / grads.shape[0])
    if batch_averaged:
        return grads.t() @ (grads * batch)
    return grads.t() @ (grads / batch)


def kronecker_factors(module: nn.Module, x: torch.Tensor, grad_output: torch.Tensor, bias: bool,
                      batch_averaged: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H_K, H_C)`` of one layer from its input ``x`` and the gradient ``grad_output`` of the loss with respect to
    its output (what the reference's forward pre-hook and backward hook see)."""
    rows, batch, positions = layer_rows(module, x, bias)
    conv = isinstance(module, nn.Conv2d)
    if conv:  # B x d x oh x ow -> (B oh ow) x d, the row order of layer_rows
        if grad_output.dim() == 3:
            grad_output = grad_output.unsqueeze(0)
        g = grad_output.permute(0, 2, 3, 1).reshape(-1, grad_output.shape[1])
    else:
        g = grad_output.reshape(-1, grad_output.shape[-1])
    return input_factor(rows, batch, positions), output_factor(g, batch, positions, batch_averaged, conv)


# -- the factor update (optimizers/local_cov.py, _update_local) --------------------------------------------------
def factor_natural_gradients(K: torch.Tensor, C: torch.Tensor, H_K: torch.Tensor, H_C: torch.Tensor,
                             damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The natural gradients ``(n_K, n_C)`` of the two factors in normal coordinates at the current point.

    ``n_K = (K^T (lambda tr(C^T C)/d K + tr(C^T H_C C)/d H_K K) - I_p) / 2`` and ``n_C`` likewise with ``K, C``,
    ``H_K, H_C`` and ``p, d`` swapped (local_cov.py ``_update_local``, the ``faster`` branch: ``tr_B_tB``,
    ``tr_v_b``, ``ng_a``, ``ng_b``). They vanish where ``K K^T = (tr(C^T H_C C)/d H_K + lambda tr(C^T C)/d I)^-1``
    and symmetrically for ``C C^T``: the factors' fixed point is the inverse of the damped Kronecker factors, split
    between the two sides by the trace terms (with ``lambda = 0``, ``C C^T (x) K K^T = (H_C (x) H_K)^-1``).
    """
    p, d = K.shape[0], C.shape[0]
    tr_CtC = torch.sum(C * C)
    tr_KtK = torch.sum(K * K)
    H_K_K = H_K @ K
    H_C_C = H_C @ C
    tr_K = torch.sum(K * H_K_K)  # tr(K^T H_K K)
    tr_C = torch.sum(C * H_C_C)  # tr(C^T H_C C)
    n_K = (K.t() @ ((damping * tr_CtC / d) * K + (tr_C / d) * H_K_K) - torch.eye(p, dtype=K.dtype, device=K.device)) / 2.0
    n_C = (C.t() @ ((damping * tr_KtK / p) * C + (tr_K / p) * H_C_C) - torch.eye(d, dtype=C.dtype, device=C.device)) / 2.0
    return n_K, n_C


@torch.no_grad()
def update_factor_(factor: torch.Tensor, momentum: torch.Tensor, natural_gradient: torch.Tensor, lr_cov: float,
                   beta: float) -> None:
    """In place: ``m <- beta m + (n + n^T)/2``, ``K <- K - lr_cov K m`` (local_cov.py ``_update_local``: the factor
    momentum ``m_A``/``m_B`` on the symmetrized natural gradient, then ``K h(-lr_cov m)`` with the first-order
    truncation ``h(M) = I + M`` of the exponential map, ``_update_helper``)."""
    momentum.mul_(beta).add_((natural_gradient + natural_gradient.t()) / 2.0)
    factor.add_(factor @ momentum, alpha=-lr_cov)


def factor_lr(step: int, lr_cov: float, warmup: bool = True, warmup_steps: tuple[int, int] = (100, 500),
              warmup_lrs: tuple[float, float] = (2e-4, 2e-3)) -> float:
    """The factor step size ``beta_1`` at optimizer step ``step`` (0-based): the reference's hard-coded schedule
    (local_cov.py ``_update_local``: ``2e-4`` while ``steps <= 100``, ``2e-3`` while ``steps < 500``, then
    ``lr_cov``), or ``lr_cov`` throughout without ``warmup``."""
    if warmup:
        if step <= warmup_steps[0]:
            return warmup_lrs[0]
        if step < warmup_steps[1]:
            return warmup_lrs[1]
    return lr_cov


# -- the preconditioned gradient (optimizers/local_cov.py, _update_natural_grad) ---------------------------------
def matrix_gradient(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None) -> torch.Tensor:
    """The layer gradient as a ``d x p`` matrix: the weight gradient flattened per output (a convolution's
    ``out x (in kh kw)``), the bias gradient as a last column (local_cov.py ``_get_matrix_form_grad``)."""
    G = weight_grad.reshape(weight_grad.shape[0], -1)
    if bias_grad is not None:
        G = torch.cat([G, bias_grad.reshape(-1, 1)], dim=1)
    return G


def precondition(G: torch.Tensor, K: torch.Tensor, C: torch.Tensor, KKt: torch.Tensor | None = None,
                 CCt: torch.Tensor | None = None) -> torch.Tensor:
    """``C C^T G K K^T`` (local_cov.py ``_update_natural_grad``): from the cached products ``C C^T`` and ``K K^T``
    when given (the reference's ``faster`` mode, which stores them in ``gg``/``aa`` after each factor update), else
    from the factors, ``C (C^T ((G K) K^T))``."""
    if KKt is not None and CCt is not None:
        return CCt @ G @ KKt
    return C @ (C.t() @ ((G @ K) @ K.t()))


# -- the optimizer ------------------------------------------------------------------------------------------------
class _StatisticsHook:
    """The forward hook the optimizer puts on each preconditioned layer. It holds the optimizer weakly and ignores
    modules the optimizer does not own, so a deep copy of the model (which copies its hooks) never feeds the
    original optimizer; pickled, it becomes inert."""

    def __init__(self, optimizer: StructuredNGD | None) -> None:
        self.ref = weakref.ref(optimizer) if optimizer is not None else None

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        optimizer = self.ref() if self.ref is not None else None
        if optimizer is not None:
            optimizer._observe(module, inputs, output)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (_StatisticsHook, (None,))


class StructuredNGD(torch.optim.Optimizer):
    """The paper's inverse-free structured NGD for deep learning (``LocalOptimizer`` in the authors' code).

    Every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` whose weight is among the optimized parameters gets factors
    ``K``, ``C`` (identity at the start) and forward hooks that record ``H_K``, ``H_C`` on the steps where the factors
    are updated (every ``update_freq`` steps: the reference's ``TCov == TInv``). At such a step the factors take one
    momentum step (:func:`factor_natural_gradients`, :func:`update_factor_`); at every step the layer's gradient is
    replaced by ``C C^T G K K^T`` (:func:`precondition`). Then every parameter, preconditioned or not (the rest:
    norms, embeddings, and layers used more than once, take plain gradients), takes the reference's ``_step``:
    ``d = g + weight_decay theta`` (decay only from step ``weight_decay_delay * update_freq`` on, as the reference
    hard-codes ``20 * TCov``), ``m <- momentum m + d``, ``theta <- theta - lr m``.

    ``lr``, ``momentum`` and ``weight_decay`` are group settings (schedules and per-parameter rules apply to them);
    the factor settings are the optimizer's. State: ``K``, ``C``, their momenta ``m_K``, ``m_C`` and (``faster``)
    the cached ``K K^T``, ``C C^T`` in the weight's state, ``momentum_buffer`` per parameter, and the step count;
    all of it round-trips through ``state_dict``. Call :meth:`remove_hooks` to detach it from the model.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Iterable[Any] | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        damping: float = 5e-3,
        beta2: float = 0.5,
        weight_decay: float = 3e-3,
        update_freq: int = 10,
        lr_cov: float = 1e-2,
        lr_cov_warmup: bool = True,
        warmup_steps: tuple[int, int] = (100, 500),
        warmup_lrs: tuple[float, float] = (2e-4, 2e-3),
        weight_decay_delay: int = 20,
        batch_averaged: bool = True,
        faster: bool = True,
    ) -> None:
        if lr < 0.0 or momentum < 0.0 or weight_decay < 0.0 or damping < 0.0 or beta2 < 0.0 or lr_cov < 0.0:
            raise ValueError("lr, momentum, weight_decay, damping, beta2 and lr_cov must be non-negative")
        if update_freq < 1:
            raise ValueError(f"update_freq must be at least 1: {update_freq}")
        if params is None:
            params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.damping, self.beta2, self.update_freq = damping, beta2, update_freq
        self.lr_cov, self.lr_cov_warmup = lr_cov, lr_cov_warmup
        self.warmup_steps, self.warmup_lrs = tuple(warmup_steps), tuple(warmup_lrs)
        self.weight_decay_delay, self.batch_averaged, self.faster = weight_decay_delay, batch_averaged, faster
        self.steps = 0
        self.layers: dict[nn.Module, tuple[nn.Parameter, nn.Parameter | None]] = {}
        self._fresh: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        optimized = {id(p) for group in self.param_groups for p in group["params"]}
        uses = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
        hook = _StatisticsHook(self)
        self._handles = []
        for module in model.modules():
            if not supported(module) or id(module.weight) not in optimized or uses[id(module.weight)] != 1:
                continue
            bias = module.bias if module.bias is not None and id(module.bias) in optimized else None
            self.layers[module] = (module.weight, bias)
            self._handles.append(module.register_forward_hook(hook))

    def remove_hooks(self) -> None:
        """Detach the statistics hooks from the model (the factors stop adapting)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- statistics ------------------------------------------------------------------------------------------------
    def record(self, module: nn.Module, H_K: torch.Tensor, H_C: torch.Tensor) -> None:
        """Set the curvature factors ``(H_K, H_C)`` the next factor update of ``module`` uses, as the hooks do from
        the layer's input and output gradient (for statistics computed another way; see :func:`kronecker_factors`)."""
        if module not in self.layers:
            raise ValueError(f"{type(module).__name__} is not a layer this optimizer preconditions")
        self._fresh[module] = (H_K, H_C)

    def _observe(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        """Forward hook: on a factor-update step, pair this forward's input with the gradient at its output (the
        reference's ``_save_input`` / ``_save_grad_output``, which also record only when ``steps % TCov == 0`` and
        gradients are enabled); the last backward through the layer before the step wins."""
        layer = self.layers.get(module)
        if (layer is None or self.steps % self.update_freq != 0 or not torch.is_grad_enabled()
                or not isinstance(output, torch.Tensor) or not output.requires_grad):
            return
        x = inputs[0].detach()
        has_bias, dtype = layer[1] is not None, layer[0].dtype

        def on_gradient(grad: torch.Tensor) -> None:
            with torch.no_grad():
                self._fresh[module] = kronecker_factors(
                    module, x.to(dtype), grad.detach().to(dtype), has_bias, self.batch_averaged
                )

        output.register_hook(on_gradient)

    # -- the step ------------------------------------------------------------------------------------------------
    def _layer_state(self, weight: nn.Parameter, bias: nn.Parameter | None) -> dict[str, torch.Tensor]:
        state = self.state[weight]
        if "K" not in state:  # the reference's identity initialization (_save_input / _save_grad_output at step 0)
            p, d = weight[0].numel() + (bias is not None), weight.shape[0]
            kw = {"dtype": weight.dtype, "device": weight.device}
            state["K"], state["C"] = torch.eye(p, **kw), torch.eye(d, **kw)
            state["m_K"], state["m_C"] = torch.zeros(p, p, **kw), torch.zeros(d, d, **kw)
            if self.faster:
                state["KKt"], state["CCt"] = torch.eye(p, **kw), torch.eye(d, **kw)
        return state

    @torch.no_grad()
    def _preconditioned(self) -> dict[int, torch.Tensor]:
        """The preconditioned gradient of every layer weight and bias (after this step's factor update)."""
        update = self.steps % self.update_freq == 0
        beta_1 = factor_lr(self.steps, self.lr_cov, self.lr_cov_warmup, self.warmup_steps, self.warmup_lrs)
        directions: dict[int, torch.Tensor] = {}
        for module, (weight, bias) in self.layers.items():
            if weight.grad is None:
                continue
            state = self._layer_state(weight, bias)
            fresh = self._fresh.get(module)
            if update and fresh is not None:
                n_K, n_C = factor_natural_gradients(state["K"], state["C"], fresh[0], fresh[1], self.damping)
                update_factor_(state["K"], state["m_K"], n_K, beta_1, self.beta2)
                update_factor_(state["C"], state["m_C"], n_C, beta_1, self.beta2)
                if self.faster:
                    state["KKt"].copy_(state["K"] @ state["K"].t())
                    state["CCt"].copy_(state["C"] @ state["C"].t())
            bias_grad = None
            if bias is not None:
                bias_grad = bias.grad if bias.grad is not None else torch.zeros_like(bias)
            G = matrix_gradient(weight.grad, bias_grad)
            V = precondition(G, state["K"], state["C"], state.get("KKt"), state.get("CCt"))
            if bias is None:
                directions[id(weight)] = V.reshape(weight.shape)
            else:
                directions[id(weight)] = V[:, :-1].reshape(weight.shape)
                if bias.grad is not None:
                    directions[id(bias)] = V[:, -1].reshape(bias.shape)
        self._fresh.clear()
        return directions

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # noqa: D102 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        directions = self._preconditioned()
        decay_on = self.steps >= self.weight_decay_delay * self.update_freq
        for group in self.param_groups:
            weight_decay, momentum, lr = group["weight_decay"], group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = directions.get(id(p), p.grad)
                if weight_decay != 0 and decay_on:
                    d_p = d_p.add(p, alpha=weight_decay)
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    d_p = state["momentum_buffer"].mul_(momentum).add_(d_p)
                p.add_(d_p, alpha=-lr)
        self.steps += 1
        return loss

    def state_dict(self) -> dict[str, Any]:  # noqa: D102 - torch's, plus the step count
        state = super().state_dict()
        state["structured_ngd_steps"] = self.steps
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        state_dict = dict(state_dict)
        self.steps = int(state_dict.pop("structured_ngd_steps", 0))
        super().load_state_dict(state_dict)
