"""EVA's data-driven LoRA initialization as plain functions, usable on any model without the engine.

Explained Variance Adaptation (Paischer et al., 2024, Sec. 3). For each target
linear layer ``y = x Wᵀ`` (``W`` of shape ``(out, in)``), EVA feeds minibatches
of the fine-tuning data through the frozen pretrained model and runs an
*incremental* SVD (an incremental PCA, Ross et al. 2008) of the layer's input
activations ``X`` (rows = tokens or samples, columns = ``in`` features):

    X − mean(X) ≈ U Σ Vᵀ                                   (Sec. 3.1, Eq. 2)

After every minibatch the top right-singular vectors are compared with the
previous ones; a component has *converged* once its cosine similarity with
its previous value reaches ``τ`` (Sec. 3.1, "convergence"). Once every
component a layer needs has converged, the layer stops collecting. LoRA's
``A`` of that layer becomes the top ``r_l`` right-singular vectors (rows of
``Vᵀ``), ``B = 0``, so the adapted model starts at the pretrained one:

    A_l = V_{l,:r_l}ᵀ,   B_l = 0                             (Sec. 3.1, Eq. 3)

**Rank redistribution** (Sec. 3.2): each layer keeps up to ``round(ρ · r)``
components; the ``L · r`` components with the largest *explained variance
ratio* ``ξ_i = σ_i² / Σ_j σ_j²`` over all layers win, so a layer's rank
``r_l`` is how many of its components are among them (``ρ = 1``: every layer
keeps ``r``). The LoRA scaling is kept at ``α / r`` whatever ``r_l`` is
(PEFT's ``adjust_scaling_factors``: ``α_l = α · r_l / r``).

The numerics follow the reference implementation, Hugging Face PEFT
(``peft.tuners.lora.eva`` and ``peft.utils.incremental_pca``, Apache-2.0; the
paper's authors wrote it): float64 running moments, ``torch.svd_lowrank``
with ``q = 2k``, 4 subspace iterations and seed 42 (drawn inside
``torch.random.fork_rng``, so the caller's random stream is untouched), the
sign convention that makes each right-singular vector's largest entry
positive, and layers that see the very same input (a transformer's query,
key and value) sharing one SVD.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import cycle

import torch
import torch.nn.functional as F
from torch import nn

#: The reference's randomized-SVD settings (PEFT SVDHook: IncrementalPCA(lowrank=True, lowrank_seed=42); q = 2k, niter = 4).
LOWRANK_SEED, LOWRANK_NITER, LOWRANK_OVERSAMPLE = 42, 4, 2


class IncrementalSVD:
    """The incremental PCA of a stream of activation minibatches that EVA runs per layer (Sec. 3.1).

    ``partial_fit(X)`` folds one minibatch ``X`` (``n × features``) into the
    running decomposition: the running mean and variance are updated in
    float64 (Chan et al.'s pairwise update), and the SVD is taken of the
    stacked ``[diag(σ) Vᵀ; X − mean(X); mean correction]`` (Ross et al., 2008),
    which has the same right-singular vectors as all data seen so far,
    centred. Attributes after a fit: ``components`` (``k × features``, rows
    = right-singular vectors), ``singular_values`` (``k``),
    ``explained_variance_ratio`` (``k``, ``σ_i² / total variance``).
    """

    def __init__(self, n_components: int) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.components: torch.Tensor | None = None
        self.singular_values: torch.Tensor | None = None
        self.explained_variance_ratio: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.seen = 0

    @property
    def fitted(self) -> bool:
        return self.components is not None

    def _moments(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The running column mean and (biased) variance after ``X``, in float64, and the new sample count."""
        n = X.shape[0]
        total = self.seen + n
        previous_sum = None if self.mean is None else self.mean * self.seen
        batch_sum = X.sum(dim=0, dtype=torch.float64)
        mean = ((torch.zeros_like(batch_sum) if previous_sum is None else previous_sum) + batch_sum) / total
        centred = X - batch_sum / n
        correction = centred.sum(dim=0, dtype=torch.float64).square()
        batch_scatter = centred.square().sum(dim=0, dtype=torch.float64) - correction / n
        if self.var is None:
            return mean, batch_scatter / total, total
        ratio = float(self.seen) / n
        scatter = self.var * self.seen + batch_scatter + ratio / total * (previous_sum / ratio - batch_sum).square()
        return mean, scatter / total, total

    @torch.no_grad()
    def partial_fit(self, X: torch.Tensor) -> IncrementalSVD:
        """Fold the minibatch ``X`` (``n × features``, ``n >= n_components``) into the decomposition."""
        X = X.to(torch.float32).clone() if X.dtype not in (torch.float32, torch.float64) else X.clone()
        n, features = X.shape
        if self.n_components > features:
            raise ValueError(f"{self.n_components} components need at least as many features, got {features}")
        if self.n_components > n:
            raise ValueError(f"{self.n_components} components need at least as many samples per batch, got {n}")
        if self.fitted and features != self.components.shape[1]:
            raise ValueError(f"the batch has {features} features, the decomposition {self.components.shape[1]}")
        mean, var, total = self._moments(X)
        if not self.fitted:
            X -= mean
        else:
            batch_mean = X.mean(dim=0)
            X -= batch_mean
            shift = math.sqrt((self.seen / total) * n) * (self.mean - batch_mean)
            X = torch.vstack((self.singular_values[:, None] * self.components, X, shift))
        with torch.random.fork_rng(devices=[X.device] if X.device.type == "cuda" else []):
            torch.manual_seed(LOWRANK_SEED)
            _U, S, V = torch.svd_lowrank(X, q=LOWRANK_OVERSAMPLE * self.n_components, niter=LOWRANK_NITER)
        Vt = V.mH
        # the sign convention: each right-singular vector's largest-magnitude entry is positive
        signs = torch.sign(Vt[torch.arange(Vt.shape[0]), Vt.abs().argmax(dim=1)])
        Vt = Vt * signs[:, None]
        k = self.n_components
        self.components, self.singular_values = Vt[:k], S[:k]
        self.explained_variance_ratio = (S**2 / torch.sum(var * total))[:k]
        self.mean, self.var, self.seen = mean, var, total
        return self


def rank_distribution(
    ratios: dict[str, torch.Tensor],
    sources: dict[str, str],
    budget: int,
    max_components: dict[str, int],
    shared: dict[str, str] | None = None,
) -> dict[str, int]:
    """EVA's rank redistribution (Sec. 3.2): how many of its components each layer keeps.

    ``ratios[s]`` are the explained variance ratios of SVD ``s``; ``sources``
    maps each layer to the SVD it reads (itself, or the layer it shares its
    input with); each layer offers its first ``max_components[layer]`` ratios
    and the ``budget`` largest over all layers are kept. ``shared`` maps a
    layer to the layer whose SVD it shares: the SVD's owner gets the larger of
    the two counts (its SVD must converge for both).
    """
    keys, values = zip(*[(layer, c) for layer, source in sources.items() for c in ratios[source][: max_components[layer]]])
    order = torch.stack(values).argsort(descending=True)
    won = Counter(keys[i] for i in order[:budget].tolist())
    counts = {layer: won.get(layer, 0) for layer in sources}
    for layer, owner in (shared or {}).items():
        if counts[owner] < counts[layer]:
            counts[owner], counts[layer] = counts[layer], counts[owner]
    return counts


def _rows(layer_input: torch.Tensor) -> torch.Tensor:
    """A layer input as a matrix of activation vectors: every dimension but the last is flattened."""
    return layer_input.reshape(-1, layer_input.shape[-1]) if layer_input.ndim > 2 else layer_input


@dataclass
class EvaResult:
    """What :func:`eva_components` found: ``A`` per layer (``r_l × in``; ``r_l = 0`` means not adapted)."""

    components: dict[str, torch.Tensor]
    ranks: dict[str, int]
    iterations: int
    converged: bool
    shared: dict[str, str] = field(default_factory=dict)
    explained_variance: dict[str, float] = field(default_factory=dict)
    singular_values: dict[str, torch.Tensor] = field(default_factory=dict)

    def svd_singular_values(self, name: str) -> torch.Tensor:
        """The singular values of the SVD layer ``name`` reads (its own, or its input-sharing owner's)."""
        return self.singular_values[self.shared.get(name, name)]


@torch.no_grad()
def eva_components(
    model: nn.Module,
    batches: Sequence[object],
    targets: Iterable[str],
    rank: int | dict[str, int],
    rho: float = 2.0,
    tau: float = 0.99,
    whiten: bool = False,
    forward: Callable[[nn.Module, object], object] | None = None,
    rows: Callable[[torch.Tensor, object], torch.Tensor] | None = None,
    max_iterations: int | None = None,
) -> EvaResult:
    """EVA's initialization of ``A`` for the linear layers ``targets`` of ``model`` (Sec. 3, Algorithm 1).

    ``batches`` are cycled through ``forward(model, batch)`` (default:
    ``model(batch)``) until every layer's needed components have converged
    (cosine similarity ``>= tau`` with the previous minibatch's), or after
    ``max_iterations`` forwards (``None``: no limit, as in PEFT). ``rows(layer_input,
    batch)`` turns a layer's input into the activation matrix (default:
    flatten all but the last dimension; PEFT drops padding tokens here).
    ``rank`` is ``r`` (or ``r`` per layer); each layer may keep up to
    ``round(rho · r)`` components and the ``Σ r`` with the largest explained
    variance ratio are kept (``rho = 1``: every layer keeps ``r``).
    ``whiten`` divides each component by ``sqrt(σ_i)`` (PEFT's ``whiten``).
    """
    targets = list(targets)
    if not targets:
        raise ValueError("EVA needs at least one target layer")
    if not batches:
        raise ValueError("EVA needs at least one batch")
    if rho < 1.0:
        raise ValueError(f"rho must be >= 1, got {rho}")
    forward = forward or (lambda m, b: m(b))
    rows = rows or (lambda layer_input, batch: _rows(layer_input))
    layers = {name: model.get_submodule(name) for name in targets}
    ranks = {name: rank[name] if isinstance(rank, dict) else rank for name in targets}
    max_components = {name: round(ranks[name] * rho) for name in targets}
    budget = sum(ranks.values())
    training = model.training
    model.eval()
    current: dict[str, object] = {"batch": batches[0]}
    seen: dict[str, torch.Tensor] = {}
    sinks: dict[str, Callable[[torch.Tensor], None]] = {}

    def hook(name: str) -> Callable[..., None]:
        def run(_module: nn.Module, args: tuple, _output: object) -> None:
            if name in sinks:
                sinks[name](rows(args[0], current["batch"]))

        return run

    handles = [layers[name].register_forward_hook(hook(name)) for name in targets]
    try:
        # layers fed the very same input share one SVD (the first such layer owns it)
        for name in targets:
            sinks[name] = lambda x, name=name: seen.__setitem__(name, x.detach().clone())
        forward(model, batches[0])
        sinks.clear()
        owners: list[str] = []
        shared: dict[str, str] = {}
        for name in targets:
            owner = next((o for o in owners if seen[o].shape == seen[name].shape and torch.equal(seen[o], seen[name])), None)
            if owner is None:
                owners.append(name)
            else:
                shared[name] = owner
        seen.clear()
        shared = {n: o for owner in owners for n, o in shared.items() if o == owner}  # grouped by owner, as PEFT orders them
        for owner in dict.fromkeys(shared.values()):
            group = [owner] + [n for n, o in shared.items() if o == owner]
            top = max(max_components[n] for n in group)
            for n in group:
                max_components[n] = top
        svds = {name: IncrementalSVD(max_components[name]) for name in owners}
        converged = {name: torch.zeros(max_components[name], dtype=torch.bool) for name in owners}

        def collect(name: str) -> Callable[[torch.Tensor], None]:
            def fit(x: torch.Tensor) -> None:
                svd = svds[name]
                if x.shape[0] < svd.n_components:
                    return  # too few activation vectors in this batch for the SVD (the reference skips it too)
                previous = None if not svd.fitted else svd.components.clone()
                svd.partial_fit(x.to(torch.float32))
                if previous is not None:
                    converged[name] = F.cosine_similarity(svd.components, previous) >= tau

            return fit

        sources = {**{n: n for n in owners}, **shared}
        active = dict.fromkeys(owners, True)
        distribution = dict(max_components)
        iterations, done = 0, False
        for batch in cycle(batches):
            for name in owners:
                ready = bool(torch.all(converged[name][: distribution[name]]))
                if active[name] and ready:
                    active[name] = False
                elif not active[name] and not ready:
                    active[name] = True
            if not any(active.values()):
                done = True
                break
            if max_iterations is not None and iterations >= max_iterations:
                break
            sinks.clear()
            sinks.update({name: collect(name) for name in owners if active[name]})
            current["batch"] = batch
            forward(model, batch)
            iterations += 1
            if all(svd.fitted for svd in svds.values()):
                distribution = rank_distribution(
                    {n: s.explained_variance_ratio for n, s in svds.items()}, sources, budget, max_components, shared
                )
        sinks.clear()
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    if not all(svd.fitted for svd in svds.values()):
        raise ValueError("no batch held enough activation vectors for the SVD: use larger batches or a lower rank")
    if not done:
        warnings.warn(
            f"EVA: the components had not all converged (tau = {tau}) after {iterations} batches; using them as they are",
            stacklevel=2,
        )
    components, explained = {}, {}
    for name in targets:
        svd, r = svds[sources[name]], distribution[name]
        u = svd.components[:r]
        if whiten:
            u = u / svd.singular_values[:r].sqrt().reshape(-1, 1)
        components[name] = u
        explained[name] = float(svd.explained_variance_ratio[:r].sum())
    values = {n: svd.singular_values for n, svd in svds.items()}
    return EvaResult(components, {n: distribution[n] for n in targets}, iterations, done, shared, explained, values)


def eva_alpha(alpha: float, rank: int, layer_rank: int, adjust_scaling: bool = True) -> float:
    """A layer's ``α_l`` after redistribution: ``α · r_l / r`` (keeps ``α_l / r_l = α / r``) or ``α`` unchanged."""
    return alpha * (layer_rank / rank) if adjust_scaling and layer_rank != rank else alpha


@torch.no_grad()
def eva_init_(layer: nn.Module, components: torch.Tensor) -> nn.Module:
    """Set a :class:`paperkit.LowRankLinear`'s ``A`` to the components and ``B`` to zero (Eq. 3)."""
    if tuple(components.shape) != tuple(layer.lora_A.shape):
        raise ValueError(f"components {tuple(components.shape)} do not fit A {tuple(layer.lora_A.shape)}")
    layer.lora_A.copy_(components.to(layer.lora_A.dtype))
    layer.lora_B.zero_()
    return layer
