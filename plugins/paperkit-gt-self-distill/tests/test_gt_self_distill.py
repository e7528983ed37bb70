"""Self-distillation with ground-truth targets: the kernel theory, the deep-network loss, the alpha estimate.

* The kernel half is pinned to the reference notebook's published numbers
  (Kennethborup/self_distillation README: the loss of six distillation steps and
  of the limit against the true sinusoid, on Mobahi et al.'s eleven points) and to
  the paper's statements: any step is a function of the first fit (spectral
  recursion = refitting), infinitely many steps are ridge regression with
  ``λ/α``, and the closed-form best ``α`` equals a grid search over refitted students.
* The deep-network loss is pinned to the reference ``self_distiller.py``'s
  ``training_step`` (its three lines rewritten here; the file needs Lightning and
  CIFAR-10).
* The hook: the estimate, the chain of variants, and example.toml end to end.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from paperkit_gt_self_distill import GtSelfDistillConfig, method
from paperkit_gt_self_distill.functional import (
    amplified_regularization,
    distilled_spectrum,
    estimate_alpha,
    kernel_ridge,
    limit_spectrum,
    mixed_targets,
    optimal_alpha,
    optimal_alpha_kernel,
    rbf_kernel,
    self_distill_kernel,
    self_distillation_losses,
)
from paperkit_gt_self_distill.hooks import GtSelfDistill

from paperkit import IndexedDataset, PlanError
from paperkit.testing import checkpoint_round_trip

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"

# Mobahi, Farajtabar & Bartlett (2020)'s eleven noisy samples of sin(2πx), as in the reference toy_example.ipynb
_X = torch.arange(11, dtype=torch.float64).reshape(-1, 1) / 10
_Y = torch.tensor(
    [
        0.38476636465198066,
        1.2333967683416893,
        1.33232242218057,
        0.69201594888895180,
        -0.29756145531871736,
        -0.24189291901377769,
        -0.7964485769175675,
        -0.9616480167034174,
        -0.49672509509916934,
        -0.3469066003991437,
        0.5589512650600734,
    ],
    dtype=torch.float64,
).reshape(-1, 1)
_GRID = torch.arange(101, dtype=torch.float64).reshape(-1, 1) / 100  # np.arange(0, 1.01, 0.01)


def _toy_losses(alpha: float, steps: int = 6) -> tuple[list[float], float]:
    """The notebook's table: MSE to sin(2πx) on the grid after each step, and of the limit (γ = 80, λ = 0.2)."""
    kernel, rows, lam = rbf_kernel(_X, _X, 80.0), rbf_kernel(_GRID, _X, 80.0), 0.2
    truth = torch.sin(2 * math.pi * _GRID)
    steps_out = [float((rows @ c - truth).pow(2).mean()) for c in self_distill_kernel(kernel, _Y, lam, [alpha] * steps)]
    limit = rows @ kernel_ridge(kernel, _Y, amplified_regularization(lam, alpha)) if alpha > 0 else 0 * truth
    return steps_out, float((limit - truth).pow(2).mean())


# -- kernel ridge regression --------------------------------------------------------------------------------------
def test_toy_example_matches_the_reference_table():
    """README of Kennethborup/self_distillation: the loss w.r.t. the true sinusoid per step and in the limit.

    Its second column is headed ``alpha = 0.25`` but holds the numbers of ``alpha = 0.35`` (the value its
    text names for the limit); ours reproduce both columns to the 5 printed decimals under that reading.
    """
    steps, limit = _toy_losses(0.0)
    assert [round(s, 5) for s in steps] == [0.16477, 0.15076, 0.14915, 0.15561, 0.16735, 0.18251]
    assert round(limit, 5) == 0.49505  # the zero function: pure self-distillation collapses
    steps, limit = _toy_losses(0.35)
    assert [round(s, 5) for s in steps] == [0.16477, 0.15424, 0.15089, 0.14983, 0.14954, 0.14948]
    assert round(limit, 5) == 0.14959


def _psd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return rbf_kernel(x, x, 0.7)


@pytest.mark.parametrize("alphas", [[0.3] * 5, [0.0, 1.0, 0.5, 0.9, 0.2, 0.7], [0.0] * 4])
def test_every_step_is_a_function_of_the_first_fit(alphas):
    """Refitting step by step gives ``f^(τ)(X) = V B^(τ) Vᵀ y`` with the recursion of ``B`` (paper Sec. 4)."""
    kernel, lam = _psd(12, 0), 0.3
    y = torch.randn(12, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d, vectors = torch.linalg.eigh(kernel)
    fits = self_distill_kernel(kernel, y, lam, alphas)
    for t in range(1, len(alphas) + 1):
        b = distilled_spectrum(d, lam, alphas[:t])
        torch.testing.assert_close(kernel @ fits[t - 1], vectors @ torch.diag(b) @ vectors.T @ y, rtol=1e-9, atol=1e-10)
    if alphas[1] == 1.0:  # alpha weighs the labels: alpha = 1 at step 2 refits the first fit exactly
        torch.testing.assert_close(kernel @ fits[1], kernel @ fits[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 0.35, 0.8])
def test_infinitely_many_steps_are_ridge_with_regularization_lambda_over_alpha(alpha):
    """The limit theorem: ``f^(∞)`` solves the original problem with ``λ`` amplified to ``λ/α``."""
    kernel, lam = _psd(10, 2), 0.5
    y = torch.randn(10, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    last = self_distill_kernel(kernel, y, lam, [alpha] * 400)[-1]
    torch.testing.assert_close(last, kernel_ridge(kernel, y, lam / alpha), rtol=1e-8, atol=1e-10)
    d, _ = torch.linalg.eigh(kernel)
    torch.testing.assert_close(limit_spectrum(d, lam, alpha), d / (d + lam / alpha))
    torch.testing.assert_close(distilled_spectrum(d, lam, [alpha] * 400), limit_spectrum(d, lam, alpha))
    assert amplified_regularization(lam, alpha) == pytest.approx(lam / alpha)


def test_pure_self_distillation_shrinks_to_the_zero_function():
    """alpha = 0 (Mobahi et al.): every step shrinks every spectral coefficient; the limit is 0."""
    kernel, lam = _psd(10, 4), 0.2
    d, _ = torch.linalg.eigh(kernel)
    previous = None
    for t in range(1, 30):
        b = distilled_spectrum(d, lam, [0.0] * t)
        if previous is not None:
            assert bool((b < previous).all())
        previous = b
    assert float(distilled_spectrum(d, lam, [0.0] * 2000).max()) < 1e-6
    assert amplified_regularization(lam, 0.0) == math.inf and float(limit_spectrum(d, lam, 0.0).abs().max()) == 0.0


def _synthetic(seed: int, n: int = 30):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64)
    y = torch.sin(2 * math.pi * x) + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    grid = torch.linspace(0, 1, 200, dtype=torch.float64).reshape(-1, 1)
    return x, y, grid, torch.sin(2 * math.pi * grid)


@pytest.mark.parametrize("seed, step", [(0, 2), (1, 2), (2, 3)])
def test_optimal_alpha_equals_a_grid_search(seed, step):
    """Algorithm 1's closed-form alpha is the minimizer a grid search finds by refitting each student.

    The reference is the true function on a grid (what the notebook measures); the teacher is the chain so far
    with alpha = 0.5. The closed form is exact because a kernel student is linear in alpha."""
    x, y, grid, truth = _synthetic(seed)
    kernel, rows, lam = rbf_kernel(x, x, 10.0), rbf_kernel(grid, x, 10.0), 0.3
    teacher = kernel @ self_distill_kernel(kernel, y, lam, [0.5] * (step - 1))[-1]
    best = optimal_alpha_kernel(kernel, y, teacher, lam, truth, rows)
    assert 0.0 < best < 1.0  # this problem is in the paper's regime: mixing beats either end

    def loss(alpha: float) -> float:
        coef = kernel_ridge(kernel, alpha * y + (1 - alpha) * teacher, lam)
        return float((rows @ coef - truth).pow(2).sum())

    grid_alphas = [i / 1000 for i in range(-3000, 3001)]
    losses = [loss(a) for a in grid_alphas]
    found = grid_alphas[min(range(len(losses)), key=losses.__getitem__)]
    assert abs(best - found) <= 1e-3
    assert loss(best) <= min(losses) + 1e-12


def test_against_the_training_labels_alpha_is_never_below_one():
    """Why the estimate needs held-out labels: on the training targets themselves the best kernel student never
    mixes in the teacher (alpha* ≥ 1 whatever the teacher in the chain), so Algorithm 1's ``y`` must be data the
    students were not fitted to (the true function in the toy example, a validation set for networks)."""
    for seed in range(5):
        x, y, _, _ = _synthetic(seed)
        kernel = rbf_kernel(x, x, 30.0)
        for alphas in ([0.0], [0.5, 0.5], [0.0, 0.0, 0.0]):
            teacher = kernel @ self_distill_kernel(kernel, y, 0.05, alphas)[-1]
            assert optimal_alpha_kernel(kernel, y, teacher, 0.05, y) >= 1.0 - 1e-9


def test_optimal_alpha_hand_cases():
    p1, p0 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert optimal_alpha(torch.tensor([0.25, 0.75]), p1, p0) == pytest.approx(0.25)
    assert optimal_alpha(p1, p1, p0) == pytest.approx(1.0) and optimal_alpha(p0, p1, p0) == pytest.approx(0.0)
    assert optimal_alpha(torch.tensor([2.0, -1.0]), p1, p0) == pytest.approx(2.0)  # over all reals
    assert optimal_alpha(torch.tensor([3.0, 1.0]), p1, p1) == 1.0  # identical students: the labels


# -- deep networks ------------------------------------------------------------------------------------------------
def _reference_training_step(pred, target, teacher_target, alpha):
    """Kennethborup/self_distillation self_distiller.py LitResnet.training_step, without its l2 term."""
    loss = F.mse_loss(F.softmax(pred, dim=1), target)
    loss *= alpha
    distill_loss = F.mse_loss(F.softmax(pred, dim=1), F.softmax(teacher_target, dim=1))
    return loss + (1 - alpha) * distill_loss


@pytest.mark.parametrize("batch, classes, alpha", [(16, 10, 0.6), (7, 3, 0.0), (33, 100, 1.0), (5, 2, 0.25)])
def test_the_loss_is_the_reference_training_step(batch, classes, alpha):
    g = torch.Generator().manual_seed(batch)
    pred = torch.randn(batch, classes, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = 3 * torch.randn(batch, classes, generator=g, dtype=torch.float64)
    target = F.one_hot(torch.randint(0, classes, (batch,), generator=g), classes).double()
    ours = self_distillation_losses(pred, target, teacher, alpha, "mse").mean()
    reference = _reference_training_step(pred, target, teacher, alpha)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-14)
    # the weighted MSE and the MSE to the mixed target differ by a constant: the same gradient (paper Sec. 3)
    (grad_ours,) = torch.autograd.grad(ours, pred)
    mixed = mixed_targets(target, F.softmax(teacher, -1), alpha)
    (grad_mixed,) = torch.autograd.grad(F.mse_loss(F.softmax(pred, 1), mixed), pred)
    torch.testing.assert_close(grad_ours, grad_mixed, rtol=1e-10, atol=1e-14)


def test_cross_entropy_form_and_round_zero():
    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    labels = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4).float()
    ce = self_distillation_losses(logits, labels, teacher, 0.3, "cross-entropy")
    expected = F.cross_entropy(logits, 0.3 * labels + 0.7 * F.softmax(teacher, -1), reduction="none")
    torch.testing.assert_close(ce, expected)
    plain = self_distillation_losses(logits, labels, None, 0.3, "mse")  # no teacher: the labels alone
    torch.testing.assert_close(plain, (F.softmax(logits, -1) - labels).pow(2).mean(-1))
    torch.testing.assert_close(self_distillation_losses(logits, labels, teacher, 1.0, "mse"), plain)
    with pytest.raises(ValueError):
        self_distillation_losses(logits, labels, teacher, 0.3, "hinge")


def test_estimate_recovers_a_linear_mixture_of_the_two_students():
    g = torch.Generator().manual_seed(5)
    z1, z0 = torch.randn(40, 10, generator=g), torch.randn(40, 10, generator=g)
    reference = 0.37 * F.softmax(z1.double(), -1) + 0.63 * F.softmax(z0.double(), -1)
    assert estimate_alpha(reference, z1, z0) == pytest.approx(0.37, abs=1e-12)


# -- the hook -----------------------------------------------------------------------------------------------------
class _FakeTeacher:
    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    def __call__(self, batch: dict) -> torch.Tensor:
        return self.logits(batch["x"])


def _fake_ctx(valid: IndexedDataset | None, teachers: dict[str, _FakeTeacher]):
    asked = []

    def teacher(ref, where="", cache=False):
        asked.append((ref, cache))
        return teachers[ref]

    ctx = SimpleNamespace(
        experience=SimpleNamespace(valid=valid),
        device=torch.device("cpu"),
        plan=SimpleNamespace(path="p.toml"),
        teacher=teacher,
    )
    return ctx, asked


def test_the_hook_estimates_alpha_on_the_validation_set_then_trains_with_it():
    g = torch.Generator().manual_seed(0)
    valid = IndexedDataset(torch.randn(50, 6, generator=g), torch.randint(0, 4, (50,), generator=g))
    teachers = {name: _FakeTeacher(torch.randn(6, 4, generator=g)) for name in ("variant:r0", "variant:r1z")}
    ctx, asked = _fake_ctx(valid, teachers)
    config = GtSelfDistillConfig(teacher="variant:r0", alpha_from=("variant:r0", "variant:r1z"), clip_alpha=False)
    hook = GtSelfDistill(config)
    batch = {"x": torch.randn(8, 6, generator=g), "y": torch.randint(0, 4, (8,), generator=g)}
    logits = torch.randn(8, 4, generator=g, requires_grad=True)
    value = hook.loss(batch, SimpleNamespace(logits=logits), ctx)
    expected_alpha = estimate_alpha(
        F.one_hot(valid.y, 4).double(), teachers["variant:r0"].logits(valid.x), teachers["variant:r1z"].logits(valid.x)
    )
    assert hook.alpha == pytest.approx(expected_alpha) and hook.estimate == pytest.approx(expected_alpha)
    expected = self_distillation_losses(
        logits, F.one_hot(batch["y"], 4).float(), teachers["variant:r0"](batch), expected_alpha
    ).mean()
    torch.testing.assert_close(value, expected)
    assert asked[0] == ("variant:r0", True)  # the round's teacher (cached by default)
    assert hook.after_run(ctx) == {"alpha": hook.alpha, "alpha_estimate": hook.estimate}
    # the estimate is state: a resumed run trains with the same alpha without asking the students again
    restored = GtSelfDistill(config)
    restored.load_state_dict(checkpoint_round_trip(hook.state_dict()))
    ctx2, asked2 = _fake_ctx(None, teachers)
    torch.testing.assert_close(restored.loss(batch, SimpleNamespace(logits=logits), ctx2), value)
    assert asked2 == [("variant:r0", True)]


def test_the_estimate_is_clipped_to_the_unit_interval_by_default_and_needs_a_validation_set():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g)
    valid = IndexedDataset(x, (x @ torch.randn(5, 3, generator=g)).argmax(-1))
    good = _FakeTeacher(torch.randn(5, 3, generator=g))
    teachers = {"variant:a": _FakeTeacher(-good.weight), "variant:b": good}  # the alpha = 0 student is the better
    ctx, _ = _fake_ctx(valid, teachers)
    hook = GtSelfDistill(GtSelfDistillConfig(teacher="variant:a", alpha_from=("variant:a", "variant:b")))
    hook.loss({"x": x[:4], "y": valid.y[:4]}, SimpleNamespace(logits=torch.randn(4, 3)), ctx)
    assert hook.estimate is not None and hook.alpha == min(max(hook.estimate, 0.0), 1.0)
    hook = GtSelfDistill(GtSelfDistillConfig(teacher="variant:a", alpha_from=("variant:a", "variant:b")))
    with pytest.raises(PlanError, match="validation_fraction"):
        hook.loss(
            {"x": x[:4], "y": valid.y[:4]}, SimpleNamespace(logits=torch.randn(4, 3)), _fake_ctx(None, teachers)[0]
        )


def test_config_ranges():
    for bad in (
        {"alpha": 1.5},
        {"alpha": -0.1},
        {"loss": "hinge"},
        {"alpha_from": ("variant:a",)},
        {"loss": "cross-entropy", "clip_alpha": False},
    ):
        with pytest.raises(ValueError):
            GtSelfDistillConfig(**bad)
    c = GtSelfDistillConfig()
    assert (c.teacher, c.alpha, c.alpha_from, c.clip_alpha, c.loss) == (None, 0.6, (), True, "mse")


def test_record():
    assert method.honours == ("target", "weight") and set(method.hooks) == {"loss", "after_run"}
    assert {c.id for c in method.claims} == {"one-round", "ground-truth-helps"}


# -- plans --------------------------------------------------------------------------------------------------------
def test_example_plan_runs_the_chain(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    """round1 of example.toml: the engine runs round0 and round1-zero first, round1 trains with their estimate."""
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), variant="round1")
    assert results["status"] == "completed" and "gt-self-distill" in manifest["methods"]
    summary = results["summary"]["gt-self-distill"]
    assert math.isfinite(summary["alpha_estimate"]) and summary["alpha"] == min(max(summary["alpha_estimate"], 0), 1)
    used = {r["reference"] for r in results["references"]}
    assert used == {"variant:round0", "variant:round1-zero"}
    assert 0.0 <= results["final"]["classification/accuracy"] <= 1.0
