"""The math of weight balancing and the one-stage recipe, then the hooks inside short runs.

No reference implementation installs as a package (ShadeAlsha/LTR-weight-balancing and
HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem are scripts and notebooks), so the
``reference_*`` helpers below transcribe the torch/NumPy calls the references make (class-balanced
weights and losses, MaxNorm's PGD, the ETF, the logit adjuster, the Fisher ratio) and the tests pin our
functions to them; invariants cover the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from paperkit_weight_balancing import functional
from scipy.stats import ortho_group
from torch import nn

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


# -- transcriptions of the references' calls -------------------------------------------------------------
def reference_cb_weights(samples_per_cls: list[int], beta: float) -> np.ndarray:
    """Both references' ``CB_loss`` weights: (1 - beta) / (1 - beta^n), or 1 / n for beta = 1, summing to C."""
    if beta != 1.0:
        weights = (1.0 - beta) / (
            1.0 - np.power(np.array([beta] * len(samples_per_cls)), np.array(samples_per_cls, float))
        )
    else:
        weights = 1.0 / np.array(samples_per_cls, dtype=float)
    return weights / np.sum(weights) * len(samples_per_cls)


def reference_cb_softmax_ce(labels, logits, samples_per_cls, beta):  # noqa: ANN001, ANN201
    """HN410's ``CB_loss(..., "softmax", ...)``: per-sample cross-entropy times w_y, mean over the batch."""
    classes = logits.shape[1]
    one_hot = F.one_hot(labels, classes).float()
    weights = torch.tensor(reference_cb_weights(samples_per_cls, beta)).float().unsqueeze(0).repeat(len(labels), 1)
    weights = (weights * one_hot).sum(1)
    return (weights * F.cross_entropy(logits, one_hot, reduction="none")).mean()


def reference_cb_softmax_bce(labels, logits, samples_per_cls, beta):  # noqa: ANN001, ANN201
    """ShadeAlsha's (vandit15's) ``CB_loss(..., "softmax", ...)``: BCE of the softmax, weights w_y over every class."""
    classes = logits.shape[1]
    one_hot = F.one_hot(labels, classes).float()
    weights = torch.tensor(reference_cb_weights(samples_per_cls, beta)).float().unsqueeze(0).repeat(len(labels), 1)
    weights = (weights * one_hot).sum(1).unsqueeze(1).repeat(1, classes)
    return F.binary_cross_entropy(input=logits.softmax(dim=1), target=one_hot, weight=weights)


def reference_pgd(weight: torch.Tensor, thresh_fraction: float, steps_of_noise: list[torch.Tensor]) -> torch.Tensor:
    """``MaxNorm_via_PGD``: the radius from the first weights, then after each update rescale rows above it."""
    w = weight.clone()
    norms = torch.linalg.norm(w.reshape(w.shape[0], -1), ord=2, dim=1).unsqueeze(-1)
    thresh = norms.min() + thresh_fraction * (norms.max() - norms.min())
    for noise in steps_of_noise:
        w = w + noise
        norms = (torch.linalg.norm(w.reshape(w.shape[0], -1), ord=2, dim=1) ** 1).unsqueeze(-1)
        scaling = torch.ones_like(w)
        idx = (norms > thresh).squeeze()
        tmp = thresh / (norms[idx].squeeze()) ** 1
        for _ in range(len(scaling.shape) - 1):
            tmp = tmp.unsqueeze(-1)
        scaling[idx] = torch.mul(scaling[idx], tmp)
        w[idx] = scaling[idx] * w[idx]
    return w


def reference_etf(num_classes: int, dim: int, seed: int) -> torch.Tensor:
    """HN410's ``get_general_etf``: ortho_group columns times the standard simplex ETF, transposed."""
    ans = torch.eye(num_classes) - torch.ones((num_classes, num_classes)) / num_classes
    ans = ans * np.sqrt(num_classes / (num_classes - 1))
    basis = torch.tensor(ortho_group.rvs(dim, random_state=seed)[:, :num_classes]).to(torch.float32)
    return torch.matmul(basis, ans).T


def reference_fdr(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """HN410's ``calc_fdr`` (its n_classes <= 100 branch)."""
    features = features.to(torch.float64)
    zero_counts = (torch.abs(features - features[0:1]) <= features.mean().abs() * 1e-3).sum(dim=0)
    features = features[:, zero_counts < features.shape[0]]
    counts = torch.tensor([torch.count_nonzero(labels == i) for i in range(n_classes)])
    means = torch.stack([features[labels == i].mean(dim=0) for i in range(n_classes)])
    mean = features.mean(axis=0)
    s_b = means - mean
    s_b = torch.mm(s_b.T * counts, s_b)
    s_w = [features[i == labels] - means[i] for i in range(n_classes)]
    s_w = torch.stack([torch.mm(x.T, x) for x in s_w]).sum(dim=0)
    empty = (s_w.abs() <= features.mean().abs() * 1e-3).sum(dim=0) == s_w.shape[1]
    if empty.sum() > 0:
        used = torch.logical_not(empty)
        s_w, s_b = s_w[used, :][:, used], s_b[used, :][:, used]
    return torch.trace(torch.linalg.solve(s_w, s_b)).item()


# -- the class-balanced loss -----------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.9999, 0.99, 0.5, 1.0])
def test_class_balanced_weights_match_the_references(beta: float) -> None:
    counts = [134, 80, 48, 29, 17, 10, 6, 3, 2, 1]
    ours = functional.class_balanced_weights(torch.tensor(counts), beta)
    torch.testing.assert_close(ours, torch.tensor(reference_cb_weights(counts, beta)).float(), rtol=1e-6, atol=0)
    assert abs(float(ours.sum()) - len(counts)) < 1e-5 and torch.all(ours[1:] >= ours[:-1])


def test_class_balanced_weights_limits() -> None:
    counts = torch.tensor([50, 10, 5, 0])
    assert torch.equal(functional.class_balanced_weights(counts, 0.0), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    inverse = functional.class_balanced_weights(counts, 1.0)  # 1/n normalized over the 3 present classes
    expected = torch.tensor([1 / 50, 1 / 10, 1 / 5, 0.0]) / (1 / 50 + 1 / 10 + 1 / 5) * 3
    torch.testing.assert_close(inverse, expected)
    with pytest.raises(ValueError):
        functional.class_balanced_weights(counts, 1.5)


@pytest.mark.parametrize(("batch", "classes", "seed"), [(8, 5, 0), (32, 10, 1), (3, 2, 2)])
def test_class_balanced_losses_match_the_references(batch: int, classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=g) * 3
    labels = torch.randint(0, classes, (batch,), generator=g)
    counts = [int(c) for c in torch.randint(1, 200, (classes,), generator=g)]
    weights = functional.class_balanced_weights(torch.tensor(counts), 0.9999)
    one_hot = F.one_hot(labels, classes).float()
    ce = functional.class_balanced_loss(logits, one_hot, weights, "softmax-ce").mean()
    torch.testing.assert_close(ce, reference_cb_softmax_ce(labels, logits, counts, 0.9999), rtol=1e-6, atol=1e-7)
    bce = functional.class_balanced_loss(logits, one_hot, weights, "softmax-bce").mean()
    torch.testing.assert_close(bce, reference_cb_softmax_bce(labels, logits, counts, 0.9999), rtol=1e-6, atol=1e-7)


def test_class_balanced_loss_with_equal_weights_is_cross_entropy_and_soft_targets_weigh_by_expectation() -> None:
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = F.one_hot(labels, 4).float()
    equal = functional.class_balanced_loss(logits, one_hot, torch.ones(4))
    torch.testing.assert_close(equal, F.cross_entropy(logits, labels, reduction="none"))
    weights = torch.tensor([0.5, 1.0, 1.5, 1.0])
    soft = torch.full((6, 4), 0.25)  # a uniform target weighs the sample by the mean class weight
    expected = -(soft * F.log_softmax(logits, -1)).sum(-1) * weights.mean()
    torch.testing.assert_close(functional.class_balanced_loss(logits, soft, weights), expected)
    with pytest.raises(ValueError):
        functional.class_balanced_loss(logits, one_hot, weights, "focal")  # type: ignore[arg-type]


# -- weight decay, freezing, MaxNorm -------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "decay"), [((6, 4), 0.1), ((10, 32), 5e-3), ((3, 1), 0.5)])
def test_weight_decay_transform_is_torch_sgd_weight_decay_bit_for_bit(shape: tuple[int, int], decay: float) -> None:
    torch.manual_seed(0)
    ours, reference = nn.Linear(*shape), nn.Linear(*shape)
    reference.load_state_dict(ours.state_dict())
    a = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9)
    b = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=decay)
    for _ in range(6):
        x = torch.randn(16, shape[0])
        for model, optimizer in ((ours, a), (reference, b)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            if model is ours:
                functional.add_weight_decay_(model.parameters(), decay)
            optimizer.step()
    assert torch.equal(ours.weight, reference.weight) and torch.equal(ours.bias, reference.bias)


def test_weight_decay_skips_parameters_without_gradients() -> None:
    p, q = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    p.grad = torch.zeros(3)
    functional.add_weight_decay_([p, q], 0.5)
    assert torch.equal(p.grad, torch.full((3,), 0.5)) and q.grad is None


def test_freeze_all_but_the_head_keeps_the_output() -> None:
    model = nn.Sequential()
    model.add_module("body", nn.Linear(5, 4))
    model.add_module("head", nn.Linear(4, 3))
    model.add_module("header", nn.Linear(3, 3))  # a name that only starts like the head stays frozen
    x = torch.randn(2, 5)
    before = model(x)
    assert functional.freeze_all_but(model, "head") == ["head.weight", "head.bias"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert torch.equal(model(x), before)
    with pytest.raises(ValueError):
        functional.freeze_all_but(model, "classifier")


@pytest.mark.parametrize(("classes", "dim", "fraction"), [(10, 64, 0.1), (5, 3, 0.5), (4, 8, 0.0)])
def test_max_norm_matches_the_reference_pgd(classes: int, dim: int, fraction: float) -> None:
    g = torch.Generator().manual_seed(classes)
    weight = torch.randn(classes, dim, generator=g) * torch.linspace(0.2, 3.0, classes).unsqueeze(1)
    noise = [0.3 * torch.randn(classes, dim, generator=g) for _ in range(4)]
    ours = weight.clone()
    threshold = functional.max_norm_threshold(ours, fraction)
    for step in noise:
        ours += step
        functional.max_norm_project_(ours, threshold)
    torch.testing.assert_close(ours, reference_pgd(weight, fraction, noise), rtol=1e-6, atol=1e-7)
    assert float(functional.row_norms(ours).max()) <= threshold * (1 + 1e-6)


def test_max_norm_radius_and_rows_inside_the_ball_are_untouched() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.6, 0.8]])  # norms 5, 1, 1
    threshold = functional.max_norm_threshold(weight, 0.25)
    assert threshold == 1.0 + 0.25 * (5.0 - 1.0)
    projected = weight.clone()
    assert functional.max_norm_project_(projected, threshold) == 1
    torch.testing.assert_close(projected[0], torch.tensor([3.0, 4.0]) * 2.0 / 5.0)
    assert torch.equal(projected[1:], weight[1:])


# -- the one-stage recipe -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("classes", "dim"), [(10, 128), (10, 10), (3, 7)])
def test_simplex_etf_has_the_reference_geometry(classes: int, dim: int) -> None:
    ours = functional.simplex_etf(classes, dim, torch.Generator().manual_seed(0))
    assert ours.shape == (classes, dim)
    gram = ours.double() @ ours.double().T  # basis-free: the reference's ETF has the same Gram matrix
    reference = reference_etf(classes, dim, seed=1).double()
    torch.testing.assert_close(gram, reference @ reference.T, rtol=0, atol=1e-5)
    expected = torch.full((classes, classes), -1.0 / (classes - 1), dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(gram, expected, rtol=0, atol=1e-6)
    assert torch.allclose(ours.sum(0), torch.zeros(dim), atol=1e-5)  # the rows are centred
    assert torch.equal(ours, functional.simplex_etf(classes, dim, torch.Generator().manual_seed(0)))
    assert not torch.equal(ours, functional.simplex_etf(classes, dim, torch.Generator().manual_seed(1)))


def test_simplex_etf_needs_enough_dimensions() -> None:
    with pytest.raises(ValueError):
        functional.simplex_etf(10, 9)
    with pytest.raises(ValueError):
        functional.simplex_etf(1, 9)


def test_install_fixed_etf_freezes_the_weight_and_draws_a_small_bias() -> None:
    head = nn.Linear(16, 4)
    functional.install_fixed_etf_(head, torch.Generator().manual_seed(0))
    assert not head.weight.requires_grad and head.bias.requires_grad
    torch.testing.assert_close(functional.row_norms(head.weight), torch.ones(4))
    assert float(head.bias.detach().abs().max()) <= 1 / 16


def test_feature_regularization_value_and_gradient() -> None:
    h = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    term = functional.feature_regularization(h, 0.01)
    assert abs(float(term.detach()) - 0.01 * (25.0 + 1.0) / 2 / 2) < 1e-7
    term.backward()
    torch.testing.assert_close(h.grad, 0.01 * h.detach() / 2)  # d/dh of zeta/2 mean ||h||^2 over 2 samples


@pytest.mark.parametrize("tau", [0.0, 0.65, 1.6])
def test_multiplicative_logit_adjustment_matches_the_reference_and_folds_exactly(tau: float) -> None:
    counts = torch.tensor([500, 120, 30, 7, 5])
    prior = torch.log(torch.tensor((counts / counts.sum()).numpy(), dtype=torch.float32)).unsqueeze(0)
    head = nn.Linear(6, 5)
    h = torch.randn(9, 6)
    logits = head(h).detach()
    reference = logits * torch.exp(-1 * tau * prior)  # HN410's LogitAdjuster, use_additive = False
    scales = functional.logit_adjustment_scales(counts, tau)
    torch.testing.assert_close(logits * scales, reference, rtol=1e-5, atol=1e-6)
    functional.fold_logit_adjustment_(head, scales)
    torch.testing.assert_close(head(h).detach(), reference, rtol=1e-5, atol=1e-5)
    assert torch.all(scales[1:] >= scales[:-1])  # rarer classes are scaled up


# -- Fisher's discriminant ratio -------------------------------------------------------------------------
def _clusters(
    seed: int, n: int = 120, dim: int = 6, classes: int = 4, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = 3 * torch.randn(classes, dim, generator=g)
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_ratio_matches_the_reference(seed: int) -> None:
    features, labels = _clusters(seed)
    features = torch.cat([features, torch.full((len(labels), 1), 2.0)], dim=1)  # a constant column is dropped
    ours = functional.fisher_discriminant_ratio(features, labels)
    assert ours == pytest.approx(reference_fdr(features, labels, 4), rel=1e-10)


def test_fisher_ratio_closed_form_and_invariance() -> None:
    features = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # S_B = 2·(1-3)² + 2·(5-3)² = 16, S_W = 4 · 1² = 4
    assert functional.fisher_discriminant_ratio(features, labels) == pytest.approx(4.0)
    x, y = _clusters(3)
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(9)) + 3 * torch.eye(6)
    base = functional.fisher_discriminant_ratio(x, y)
    assert functional.fisher_discriminant_ratio(x @ a + 5.0, y) == pytest.approx(base, rel=1e-6)  # affine-invariant
    tight, _ = _clusters(3, spread=0.1)
    assert functional.fisher_discriminant_ratio(tight, y) > base  # tighter classes, higher ratio


# -- the hooks inside runs -----------------------------------------------------------------------------------
def _stage_weights(results: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The weights of the referenced stage-1 run and of the run itself (beside it, in the same directory)."""
    from paperkit import read_weights

    stage1_dir = Path(results["references"][0]["run_dir"])
    (stage2_dir,) = stage1_dir.parent.glob("weight-balancing-example-wb-*")
    return read_weights(stage1_dir / "model.safetensors"), read_weights(stage2_dir / "model.safetensors")


def test_example_plan_runs_stage_two_on_stage_one(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    """The example's two stages: stage 2 trains only the classifier, whose rows end inside the MaxNorm ball."""
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), variant="wb")
    assert results["status"] == "completed" and results["steps"] > 0
    assert {"weight-balancing", "fisher-discriminant-ratio"} <= set(manifest["methods"])
    stage1, stage2 = _stage_weights(results)
    changed = {k for k in stage1 if not torch.equal(stage1[k], stage2[k])}
    assert {"head.weight", "head.bias"} <= changed
    # everything else is frozen; only batch norm's running statistics move (the model trains in train mode)
    assert all(k.startswith("head.") or "running_" in k or "num_batches" in k for k in changed), changed
    threshold = functional.max_norm_threshold(stage1["head.weight"], 0.1)
    assert float(functional.row_norms(stage2["head.weight"]).max()) <= threshold * (1 + 1e-5)
    assert 0.0 <= results["final"]["classification/tail_accuracy"] <= 1.0
    assert results["final"]["fisher-discriminant-ratio/train"] > 0


def test_logit_adjustment_run_scales_the_loaded_classifier(run_plan) -> None:  # noqa: ANN001 - the fixture
    """An evaluation-only run folds pi_c^(-tau) into the classifier it loads, and nothing else changes."""
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        '[adapt]\nuse = "weight-balancing"', '[adapt]\nuse = "multiplicative-logit-adjustment"\ntau = 0.5'
    )
    text = text.replace("epochs = 3\n", "epochs = 3\ntrain = false\n", 1)
    results, _ = run_plan(text, variant="wb")
    assert results["status"] == "completed" and results["steps"] == 0
    stage1, adjusted = _stage_weights(results)
    assert {k for k in stage1 if not torch.equal(stage1[k], adjusted[k])} == {"head.weight", "head.bias"}
    scale = adjusted["head.weight"].norm(dim=1) / stage1["head.weight"].norm(dim=1)
    assert torch.all(scale[1:] > scale[:-1])  # long-tail-digits: class c has fewer samples than class c - 1
    torch.testing.assert_close(adjusted["head.bias"], stage1["head.bias"] * scale, rtol=1e-5, atol=1e-7)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 12)
        self.head = nn.Linear(12, 3)


def test_max_norm_projects_at_the_end_of_every_epoch_and_its_radius_round_trips() -> None:
    from types import SimpleNamespace

    from paperkit_weight_balancing import WeightBalancingConfig
    from paperkit_weight_balancing.hooks import WeightBalancing

    model = _Net()
    wb = WeightBalancing(WeightBalancingConfig())
    wb.adapt(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    ctx = SimpleNamespace(steps_per_epoch=3, total_steps=7, experience_step=0)
    projected = []
    for step in range(1, 8):
        ctx.experience_step = step
        with torch.no_grad():
            model.head.weight.mul_(1.5)  # grow every row past the radius
        if wb.after_step(model, ctx) is not None:
            projected.append(step)
    assert projected == [3, 6, 7]  # epochs end at steps 3 and 6; the last (partial) epoch at 7
    assert float(functional.row_norms(model.head.weight).max()) <= wb.threshold * (1 + 1e-6)
    other = WeightBalancing(WeightBalancingConfig())
    other.load_state_dict(json.loads(json.dumps(wb.state_dict())))
    assert other.threshold == wb.threshold


def test_one_stage_decays_everything_but_the_fixed_classifier() -> None:
    from types import SimpleNamespace

    from paperkit_weight_balancing import OneStageConfig
    from paperkit_weight_balancing.hooks import OneStage

    model = _Net()
    ctx = SimpleNamespace(generator=lambda name: torch.Generator().manual_seed(0))
    method = OneStage(OneStageConfig())
    method.adapt(model, ctx)
    decayed = {id(p) for p in method._decayed(model)}
    assert decayed == {id(model.body.weight), id(model.body.bias)}
    assert method.adapter_parameters(model) == ["body.weight", "body.bias", "head.bias"]
    learned, fresh = OneStage(OneStageConfig(etf="off")), _Net()
    assert {id(p) for p in learned._decayed(fresh)} == {id(p) for p in fresh.parameters()}
    assert learned.adapter_parameters(fresh) == ["body.weight", "body.bias", "head.weight", "head.bias"]
