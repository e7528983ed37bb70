"""PS-KD (Kim, Ji, Yoon & Hwang, ICCV 2021) as plain functions, usable in any training loop.

Progressive self-knowledge distillation trains on soft targets that mix the
label with the model's own prediction for the same sample one epoch earlier:

    y_t(x) = (1 − α_t) · y(x) + α_t · p_{t−1}(x),     α_t = α_T · t / T

(Sec. 3, "PS-KD"; ``t`` counts epochs from 1, ``T`` is the number of
epochs), and minimizes the cross-entropy ``H(y_t, softmax(z))``. In the
authors' code (lgcnsai/PS-KD-Pytorch, ``main.py``) ``p_{t−1}`` is a table
with one row per training sample, read at the sample's index and overwritten
with the detached softmax of the sample's training forward pass, so the row a
sample reads in epoch ``t`` was written in epoch ``t − 1``; in the first epoch
the rows hold the labels, so the first epoch trains on the labels alone.

The pieces:

* :func:`alpha_at`: the linear schedule of α (``main.py``: ``alpha_T · (epoch + 1) / end_epoch``).
* :func:`progressive_targets`: ``(1 − α) y + α p``.
* :class:`PastPredictions`: the per-sample table, which rows were written in the current
  experience, ``targets`` (read) and ``record`` (write), with a ``state_dict``.
* :func:`soft_cross_entropy`: ``−Σ_c y_c log softmax(z)_c`` averaged over the batch
  (``loss/pskd_loss.py``); paperkit's built-in cross-entropy computes the same from
  ``batch["target"]``.
* :func:`expected_calibration_error` and :func:`aurc`: the calibration and ranking
  measures the paper reports (Sec. 4; ``utils/metric.py`` of the reference code).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def alpha_at(epoch: int, epochs: int, alpha_T: float) -> float:
    """α_t for the 0-based ``epoch`` of ``epochs``: ``α_T · (epoch + 1) / epochs``, at most α_T.

    Linear in the epoch and reaching α_T in the last one (paper Sec. 3; the
    reference ``main.py`` computes ``alpha_T * ((epoch + 1) / end_epoch)``).
    """
    epochs = max(int(epochs), 1)
    return alpha_T * min((epoch + 1) / epochs, 1.0)


def progressive_targets(labels: torch.Tensor, past: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 − α)·labels + α·past``: the soft target of PS-KD (Sec. 3), rows of probability vectors."""
    return (1.0 - alpha) * labels + alpha * past.to(labels.dtype)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_b −Σ_c t_bc log softmax(z_b)_c``: the loss PS-KD minimizes (reference ``loss/pskd_loss.py``)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class PastPredictions:
    """The table of past predictions p_{t−1}: one probability row per training sample.

    ``epoch_of[i]`` tags row ``i`` with the experience it was written in (−1:
    never). A row counts as a past prediction only within the experience that
    wrote it: the first time a sample is seen in an experience its target is
    its label, as in the reference code's first epoch (it fills the table with
    the labels), and a later experience never reads predictions made on another
    experience's data.
    """

    def __init__(self, samples: int, classes: int, device: torch.device | str = "cpu") -> None:
        self.probs = torch.zeros(samples, classes, device=device)
        self.written_in = torch.full((samples,), -1, dtype=torch.long, device=device)

    def to(self, device: torch.device | str) -> PastPredictions:
        self.probs, self.written_in = self.probs.to(device), self.written_in.to(device)
        return self

    def targets(self, index: torch.Tensor, labels: torch.Tensor, alpha: float, experience: int = 0) -> torch.Tensor:
        """PS-KD's targets for the samples ``index`` whose label vectors are ``labels`` (B, C).

        Rows written earlier in this experience give ``(1 − α)·labels + α·p``;
        the others keep ``labels`` exactly.
        """
        index = index.to(self.probs.device)
        known = (self.written_in[index] == experience).to(labels.device)
        mixed = progressive_targets(labels, self.probs[index].to(labels.device), alpha)
        return torch.where(known[:, None], mixed, labels)

    def record(self, index: torch.Tensor, probs: torch.Tensor, experience: int = 0) -> None:
        """Overwrite the rows ``index`` with ``probs`` (detached), tagged with ``experience``."""
        index = index.to(self.probs.device)
        self.probs[index] = probs.detach().to(self.probs)
        self.written_in[index] = experience

    def state_dict(self) -> dict[str, Any]:
        return {"probs": self.probs.detach().cpu().clone(), "written_in": self.written_in.cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> PastPredictions:
        table = cls(0, 0)
        table.probs, table.written_in = state["probs"].clone(), state["written_in"].clone()
        return table.to(device)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE = Σ_b (|B_b| / n)·|acc(B_b) − conf(B_b)| over ``bins`` equal-width confidence bins (Naeini et al.,
    2015; Guo et al., 2017), as a fraction (the paper's tables print it ×100).

    The confidence is the largest probability of each row, the prediction its
    class; bin ``b`` holds the confidences in ``((b − 1)/bins, b/bins]``, the
    half-open bins of the reference ``utils/metric.py`` (``bin_size = 0.1``
    there: 10 bins).
    """
    probs = probs.double()
    confidence, prediction = probs.max(dim=-1)
    correct = (prediction == labels.to(prediction.device)).double()
    inner = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64, device=probs.device)[1:-1]
    which = torch.bucketize(confidence, inner)  # b with edge[b-1] < conf <= edge[b]
    count = torch.zeros(bins, dtype=torch.float64, device=probs.device).index_add_(
        0, which, torch.ones_like(confidence)
    )
    conf_sum = torch.zeros_like(count).index_add_(0, which, confidence)
    correct_sum = torch.zeros_like(count).index_add_(0, which, correct)
    return float((conf_sum - correct_sum).abs().sum() / max(len(confidence), 1))


def aurc(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Area under the risk-coverage curve and its excess over the best ranking (Geifman et al., 2019), as fractions.

    Samples are ranked by confidence (largest probability), most confident
    first; the risk at coverage k/n is the error rate of the k most confident.
    AURC is the mean risk over k = 1..n; E-AURC subtracts the AURC of a ranking
    that puts every error last (reference ``utils/metric.py``: ``calc_aurc``,
    which reports both ×1000).
    """
    confidence, prediction = probs.double().max(dim=-1)
    wrong = (prediction != labels.to(prediction.device)).double()
    order = torch.sort(confidence, descending=True, stable=True).indices
    n = len(wrong)
    if n == 0:
        return 0.0, 0.0
    coverage = torch.arange(1, n + 1, dtype=torch.float64, device=wrong.device)
    risk = torch.cumsum(wrong[order], 0) / coverage
    value = float(risk.mean())
    errors = int(wrong.sum())
    k = torch.arange(1, errors + 1, dtype=torch.float64)
    best = float((k / (n - errors + k)).sum() / n) if errors else 0.0
    return value, value - best


def calibration_scores(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """``ece``, ``aurc`` and ``e_aurc`` of ``logits`` (softmax probabilities) against integer ``labels``."""
    probs = F.softmax(logits.float(), dim=-1)
    value, excess = aurc(probs, labels)
    return {"ece": expected_calibration_error(probs, labels, bins), "aurc": value, "e_aurc": excess}
