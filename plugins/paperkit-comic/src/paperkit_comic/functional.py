"""COMIC's loss as plain functions: the multi-focal modifier (Modification) and the reflective label corrector
(Correction) of Zhang et al., ICCV 2023, for multi-hot targets, usable in any training loop.

Notation (per sample ``b`` and label ``c``): ``z`` the logit, ``p = sigmoid(z)``, ``y`` the (possibly partial)
multi-hot target, ``n_c`` the number of observed training positives of label ``c``.

*Multi-focal modifier* (MFM; the authors' ``PriorFocalModifierLoss`` without its co-occurrence prior, which is
``MultiGrainedFocalLoss`` in the same release): an asymmetric focal loss (Ridnik et al., 2021) whose negatives'
focusing exponent and every entry's weight carry a head-tail term ``w_c``::

    w_c  = (1 - log(n_c / n_max))^k                                        (head-tail weight, 1 for the head)
    p_m  = max(p - m, 0)                                                    (probability shifting of negatives)
    ℓ_bc = -w_c [ y (1 - p)^γ+ log p  +  (1 - y) p_m^(γ- + w_c) log(1 - p_m) ]

*Reflective label corrector* (RLC; ``ReflectiveLabelCorrectorLoss``): with the observed positives' logits lowered
by a margin, ``z' = z - margin·y``, ``p' = sigmoid(z')``, an entry whose label is unknown is recalled when

    p'_bc > τ   and   p'_bc > mean_b' p'_b'c                                (the class-aware threshold)

and the corrected targets ``ŷ = max(y, recalled)`` are learned with the same focal form, on ``z'``, with weights
``w'_c`` of exponent ``k'`` computed from ``n_c`` plus the labels recalled so far in the epoch, scaled by
``B / Σ ŷ`` (batch size over the corrected positives of the batch). The loss is ``MFM + λ · RLC``.

The authors sum ``ℓ`` over labels and samples; here each sample's entries are averaged over the entries that
count, as paperkit's ``binary-cross-entropy`` does, so that with every modifier off the loss *is* that loss (the
two differ by the constant factor ``labels · batch`` when every entry counts, which Adam does not see). The ratio
of the two terms is the authors'.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Reduce = Callable[[torch.Tensor], torch.Tensor]


def class_weights(counts: torch.Tensor, exponent: float) -> torch.Tensor:
    """Head-tail weight ``w_c = (1 - log(n_c / n_max))^k`` of every label (1 for the most frequent label, larger
    for rarer ones); ``counts`` are per-label positive counts, clamped to at least 1 so that a label never seen
    positive gets a finite weight."""
    counts = counts.double().clamp_min(1.0)
    return (1.0 - torch.log(counts / counts.max())).pow(exponent).float()


def mfm_entries(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 3.0,
    clip: float = 0.05,
    detach_focal: bool = True,
) -> torch.Tensor:
    """The multi-focal modifier loss of every entry, shape ``(B, C)`` (to be minimized).

    ``weights`` (shape ``(C,)``) are the head-tail weights ``w_c``: each entry is multiplied by ``w_c`` and the
    negatives' exponent is ``γ- + w_c``; ``None`` leaves both out (plain asymmetric loss; with ``γ± = 0`` and
    ``clip = 0`` it is binary cross-entropy). ``targets`` may be soft: the two halves are mixed linearly, as in the
    authors' code. ``log p`` is computed as ``logsigmoid(z)`` (the authors clamp ``p`` at 1e-8, which only differs
    for ``z < -18``).
    """
    targets = targets.to(logits.dtype)
    if clip > 0:
        q = (1.0 - torch.sigmoid(logits) + clip).clamp(max=1.0)  # 1 - p_m
        nll = -(targets * F.logsigmoid(logits) + (1.0 - targets) * torch.log(q))  # q >= clip > 0
    else:  # without the shift the likelihood is binary cross-entropy's, computed as torch does
        q = torch.sigmoid(-logits)
        nll = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    neg_exponent = gamma_neg if weights is None else gamma_neg + weights.to(logits.dtype)
    if gamma_pos > 0 or weights is not None or gamma_neg > 0:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_focal):
            p_t = targets * torch.sigmoid(logits) + (1.0 - targets) * q
            base = 1.0 - p_t
            if not detach_focal:  # 0^0 and 0^(<1) have no finite gradient
                base = base.clamp_min(1e-12)
            factor = base.pow(gamma_pos * targets + neg_exponent * (1.0 - targets))
        nll = nll * factor
    if weights is not None:
        nll = nll * weights.to(logits.dtype)
    return nll


def masked_mean(entries: torch.Tensor, counted: torch.Tensor | None) -> torch.Tensor:
    """Each sample's mean over the entries that count (all of them when ``counted`` is ``None``), shape ``(B,)``;
    a sample with no entry counted contributes 0 (the convention of paperkit's ``binary-cross-entropy``)."""
    if counted is None:
        return entries.mean(-1)
    counted = counted.to(entries.dtype)
    return (entries * counted).sum(-1) / counted.sum(-1).clamp_min(1.0)


def margin_shift(logits: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """``z' = z - margin · y``: the corrector lowers the logits of the observed positives before it scores and
    learns (``ReflectiveLabelCorrectorLoss``, ``margin`` 1.0)."""
    return logits - margin * targets.to(logits.dtype) if margin else logits


def recall(probs: torch.Tensor, candidates: torch.Tensor, tau: float, class_mean: torch.Tensor) -> torch.Tensor:
    """The class-aware threshold: the candidate entries (unknown labels) with ``p > τ`` and ``p`` above their
    label's mean prediction over the batch (``class_mean``, shape ``(C,)``), as a bool mask ``(B, C)``."""
    return candidates.bool() & (probs > tau) & (probs > class_mean)


def candidates_of(targets: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
    """The entries the corrector may flip: the unobserved ones when a label mask says which are observed, otherwise
    every entry whose target is 0 (the paper's setting, where a missing label is indistinguishable from a negative).
    An observed label is never flipped."""
    if observed is not None:
        return ~observed.bool()
    return targets == 0


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def comic_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    counts: torch.Tensor,
    *,
    observed: torch.Tensor | None = None,
    recalled_so_far: torch.Tensor | None = None,
    unobserved: str = "negative",
    gamma_pos: float = 0.0,
    gamma_neg: float = 3.0,
    clip: float = 0.05,
    head_tail: bool = True,
    weight_exponent: float = 1 / 3,
    correction: bool = True,
    tau: float = 0.7,
    margin: float = 1.0,
    correction_weight: float = 0.2,
    correction_exponent: float = 1 / 6,
    detach_focal: bool = True,
    reduce: Reduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """COMIC's per-sample loss ``MFM + λ · RLC`` of one batch, and the labels recalled in it (per-label counts).

    ``counts``: observed training positives per label (``n_c``). ``observed``: the label mask (1 observed, 0 not),
    or ``None`` when every entry is observed. ``recalled_so_far``: per-label counts of labels recalled earlier in
    this epoch (the corrector's weights use ``n_c`` plus those plus this batch's). ``unobserved``: an unobserved
    entry is a ``"negative"`` (the paper's setting) or ``"ignore"``\\ d, unless recalled. ``reduce`` sums a batch
    statistic over every process (identity on one): the batch means, recall counts and ``B / Σ ŷ`` are those of
    the global batch.
    """
    reduce = reduce or _identity
    counted = None if observed is None or unobserved == "negative" else observed.bool()
    weights = class_weights(counts, weight_exponent).to(logits.device) if head_tail else None
    focal = {"gamma_pos": gamma_pos, "gamma_neg": gamma_neg, "clip": clip, "detach_focal": detach_focal}
    losses = masked_mean(mfm_entries(logits, targets, weights, **focal), counted)
    found = torch.zeros(logits.shape[-1], dtype=torch.float32, device=logits.device)
    if not correction:
        return losses, found
    shifted = margin_shift(logits, targets, margin)
    probs = torch.sigmoid(shifted.detach())
    size = reduce(torch.tensor(float(len(probs)), device=probs.device))
    class_mean = reduce(probs.sum(0)) / size.clamp_min(1.0)
    hits = recall(probs, candidates_of(targets, observed), tau, class_mean)
    found = reduce(hits.sum(0).float())
    corrected = torch.maximum(targets.to(logits.dtype), hits.to(logits.dtype))
    positives = reduce(corrected.detach().sum())
    so_far = found if recalled_so_far is None else recalled_so_far.to(found) + found
    rlc_weights = class_weights(counts.to(found) + so_far, correction_exponent) if head_tail else None
    rlc_counted = None if counted is None else counted | hits
    rlc = masked_mean(mfm_entries(shifted, corrected, rlc_weights, **focal), rlc_counted)
    return losses + correction_weight * (size / positives.clamp_min(1.0)) * rlc, found
