"""The math of lazy-rich-grokking, then one end-to-end run of example.toml.

There is no runnable reference implementation (the authors' code is a notebook of their supplementary material):
the tests pin the output scaling exactly, the 1/α² factor through its closed-form consequence (the first step moves
the parameters exactly 1/α as far), the alignment against hand-computed values and the authors' formula written
out in NumPy, the traced NTK against the closed form of a linear model, and the grokking-step bookkeeping.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from paperkit_lazy_rich_grokking import LazyRichGrokkingConfig, functional
from paperkit_lazy_rich_grokking.hooks import LazyRichGrokking
from torch import nn

import paperkit

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def _mlp(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return paperkit.MLP(5, classes, LazyRichGrokkingMLPConfig())


class LazyRichGrokkingMLPConfig:
    depth = 1
    width = 8
    activation = "square"
    norm = "none"
    residual = False
    dropout = 0.0
    bias = True
    maxout_pieces = 2


# -- the output scale -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.25, 1.0, 3.0])
def test_uncentred_output_is_exactly_alpha_times_h(alpha: float) -> None:
    base = _mlp()
    x = torch.randn(7, 5)
    h = base(x)
    wrapped = functional.output_scale(base, alpha, center=False)
    assert wrapped.initial is None
    assert torch.equal(wrapped(x), alpha * h)
    logits, features = wrapped(x, return_features=True)
    assert torch.equal(logits, alpha * h) and torch.equal(features, base.features(x))


@pytest.mark.parametrize("alpha", [0.5, 4.0])
def test_centred_output_is_zero_at_init_and_alpha_times_the_change_after(alpha: float) -> None:
    base = _mlp(1)
    x = torch.randn(6, 5)
    h0 = base(x).detach()
    wrapped = functional.output_scale(base, alpha, center=True)
    assert torch.equal(wrapped(x), torch.zeros_like(h0))  # f(x) = 0 at initialization, exactly
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.1 * torch.randn_like(p))
    expected = alpha * (base(x) - h0)
    torch.testing.assert_close(wrapped(x), expected, rtol=0, atol=1e-6)
    # the frozen copy trains nothing and keeps θ₀
    assert all(not p.requires_grad for p in wrapped.initial.parameters())
    assert {n for n, p in wrapped.named_parameters() if p.requires_grad} == {
        f"model.{n}" for n, _ in base.named_parameters()
    }


def test_invalid_alpha_is_refused() -> None:
    with pytest.raises(ValueError):
        functional.output_scale(_mlp(), 0.0, center=True)
    with pytest.raises(ValueError):
        LazyRichGrokkingConfig(alpha=-1.0)
    with pytest.raises(ValueError):
        LazyRichGrokkingConfig(loss_scale="half")


@pytest.mark.parametrize("alpha", [0.5, 2.0, 8.0])
def test_first_step_moves_parameters_one_over_alpha_and_function_alike(alpha: float) -> None:
    """With f = α(h − h₀) and the loss ℓ(f)/α², the gradient at θ₀ is ℓ'(0)∇h/α: the first SGD step moves the
    parameters exactly 1/α as far as at α = 1 (Chizat et al. 2019); the gradient transform gives that factor."""
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))

    def first_step(a: float) -> dict[str, torch.Tensor]:
        base = _mlp(2)
        model = functional.output_scale(base, a, center=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        functional.scale_gradients(model.parameters(), functional.loss_factor(a))
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    reference, scaled = first_step(1.0), first_step(alpha)
    for name, g in reference.items():
        torch.testing.assert_close(scaled[name], g / alpha, rtol=1e-5, atol=1e-7)


def test_gradient_transform_equals_the_gradient_of_the_divided_loss() -> None:
    alpha = 3.0
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    a = functional.output_scale(_mlp(3), alpha, center=True)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in a.model.parameters():
            p.add_(0.05)
        for p in b.model.parameters():
            p.add_(0.05)
    (nn.functional.cross_entropy(a(x), y) / alpha**2).backward()
    nn.functional.cross_entropy(b(x), y).backward()
    method = LazyRichGrokking(LazyRichGrokkingConfig(alpha=alpha))
    method.optimize().grad_transform(b)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.requires_grad:
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-6, atol=1e-9, msg=name)
    assert LazyRichGrokking(LazyRichGrokkingConfig(alpha=alpha, loss_scale="none")).optimize() is None


def test_adapt_is_the_identity_at_alpha_one_without_centring() -> None:
    method = LazyRichGrokking(LazyRichGrokkingConfig(alpha=1.0, center=False))
    model = _mlp()
    assert method.adapt(model=model) is None and method.preserves_output
    assert set(method.initial_parameters) == {n for n, _ in model.named_parameters()}
    wrapped = LazyRichGrokking(LazyRichGrokkingConfig(alpha=2.0)).adapt(model=_mlp())
    assert isinstance(wrapped, functional.OutputScaled) and wrapped.alpha == 2.0


# -- kernels and alignment --------------------------------------------------------------------------------------
K3 = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
Y3 = torch.tensor([1.0, 0.0, -1.0])


def test_alignment_hand_computed() -> None:
    # columns: K_c = K − column means = [[1, −1/3, −1], [0, 2/3, 0], [−1, −1/3, 1]]; y_cᵀK_c y_c = 4; ‖K_c‖² = 42/9
    assert functional.kernel_alignment(K3, Y3, "columns") == pytest.approx(4 / (math.sqrt(42 / 9) * 2), abs=1e-12)
    # both: H K H has ‖·‖² = 360/81; same numerator
    assert functional.kernel_alignment(K3, Y3, "both") == pytest.approx(4 / (math.sqrt(360 / 81) * 2), abs=1e-12)
    # a kernel equal to the centred labels' outer product is perfectly aligned; its negative anti-aligned
    y = torch.tensor([3.0, -1.0, 0.5, -2.5])
    assert functional.kernel_alignment(torch.outer(y, y), y, "both") == pytest.approx(1.0, abs=1e-12)
    assert functional.kernel_alignment(-torch.outer(y, y), y, "both") == pytest.approx(-1.0, abs=1e-12)


def _authors_kalignment(k: np.ndarray, y: np.ndarray) -> float:
    """The authors' kalignment (supplementary notebook), written out in NumPy."""
    yc = y - y.mean(axis=0)
    kc = k - k.mean(axis=0)
    return float(np.trace(yc.T @ kc @ yc) / (np.linalg.norm(kc) * np.linalg.norm(yc) ** 2))


@pytest.mark.parametrize("outputs", [1, 4])
def test_alignment_matches_the_authors_formula(outputs: int) -> None:
    g = torch.Generator().manual_seed(outputs)
    a = torch.randn(12, 5, generator=g, dtype=torch.float64)
    k = a @ a.T + 0.5
    y = torch.randn(12, outputs, generator=g, dtype=torch.float64)
    ours = functional.kernel_alignment(k, y, "columns")
    assert ours == pytest.approx(_authors_kalignment(k.numpy(), y.numpy()), rel=1e-12)
    # the scale of the kernel (α² for the scaled model) does not change the alignment
    assert functional.kernel_alignment(7.0 * k, y, "columns") == pytest.approx(ours, rel=1e-12)


def test_traced_ntk_of_a_linear_model_and_of_the_scaled_one() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 3, bias=False)
    x = torch.randn(5, 4)
    # f_a(x) = w_aᵀx: Σ_a ⟨∂f_a(x)/∂W, ∂f_a(x')/∂W⟩ = 3·⟨x, x'⟩
    expected = 3.0 * (x @ x.T).double()
    torch.testing.assert_close(functional.traced_ntk(linear, x), expected, rtol=1e-5, atol=1e-5)
    model, x5 = _mlp(4), torch.randn(6, 5)
    base_kernel = functional.traced_ntk(model, x5)
    scaled = functional.output_scale(model, 3.0, center=True)  # the frozen copy adds no parameter to the kernel
    torch.testing.assert_close(functional.traced_ntk(scaled, x5), 9.0 * base_kernel)


def test_kernel_distance_and_relative_change() -> None:
    assert functional.kernel_distance(2.0 * K3, K3) == pytest.approx(0.0, abs=1e-12)
    assert functional.kernel_distance(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(1.0)
    initial = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0])}
    current = {"w": torch.tensor([3.0, 4.0]) + torch.tensor([0.0, 1.0]), "b": torch.tensor([0.0]), "new": torch.ones(3)}
    assert functional.relative_change(current, initial) == pytest.approx(1.0 / 5.0)


def test_grokking_steps_and_censoring() -> None:
    steps = [10, 20, 30, 40]
    out = functional.grokking_steps(steps, [0.5, 1.0, 1.0, 1.0], [0.0, 0.1, 0.95, 1.0], 0.99, 0.9, 40)
    assert out == {"fit_step": 20.0, "generalization_step": 30.0, "delay": 10.0, "fitted": 1.0, "generalized": 1.0}
    never = functional.grokking_steps(steps, [0.5, 1.0, 1.0, 1.0], [0.0, 0.1, 0.2, 0.3], 0.99, 0.9, 50)
    assert never["generalization_step"] == 50.0 and never["generalized"] == 0.0 and never["delay"] == 30.0


def test_state_round_trips() -> None:
    from paperkit.testing import checkpoint_round_trip

    method = LazyRichGrokking(LazyRichGrokkingConfig(alpha=2.0))
    method.adapt(model=_mlp())
    method.initial_kernels["0/test"] = K3.double()
    method.curve = [(5, 0.5, 0.1), (10, 1.0, 0.2)]
    other = LazyRichGrokking(LazyRichGrokkingConfig(alpha=2.0))
    other.load_state_dict(checkpoint_round_trip(method.state_dict()))
    assert other.curve == method.curve and torch.equal(other.initial_kernels["0/test"], K3.double())
    assert all(torch.equal(other.initial_parameters[n], p) for n, p in method.initial_parameters.items())


# -- end to end -------------------------------------------------------------------------------------------------
def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "lazy-rich-grokking" in manifest["methods"]
    final = results["final"]
    assert 0.0 <= final["classification/accuracy"] <= 1.0
    assert -1.0 <= final["lazy-rich-grokking/alignment"] <= 1.0
    assert final["lazy-rich-grokking/relative_change"] > 0.0
    assert results["initial"]["lazy-rich-grokking/relative_change"] == 0.0
