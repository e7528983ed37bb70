"""The kernels of ntk against explicit computations, the statistics around them, then runs of the method.

- full eNTK: equal to an explicit loop of autograd gradients, one per sample and logit (float64, to 1e-12);
- pseudo-NTK: equal to (1/O)·Σ over the O×O output blocks of the full eNTK (Mohamadi et al.'s identity) and to an
  explicit loop over the gradients of the summed logits;
- lpNTK: a hand computation on a linear model (Θ_ab = δ_ab (x·x' + 1), so lpNTK = (x·x' + 1)·s·s'/O with
  s·s' = O for equal labels, O − 4 otherwise), the signs equal sign(e_y − softmax), and the signed block sum;
- the kernel's meaning (Jacot et al., kernel gradient descent): one small SGD step on a sample moves the logits
  of another by −η Θ(x, x_u) ∇_f C, to first order;
- the kernel-regression predictor, the spectrum, the changes from K_0, the approximation error;
- the method: example.toml end to end, the pseudo and lp kernels in a run, its state through the checkpoint codec.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from paperkit_ntk import functional
from paperkit_ntk.hooks import Ntk, evenly_spaced
from torch import nn

from paperkit.testing import checkpoint_round_trip

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def mlp(d: int = 5, width: int = 7, o: int = 4, seed: int = 0, activation: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), activation(), nn.Linear(width, width), activation(), nn.Linear(width, o))


def loop_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, O, P)``: one ``torch.autograd.grad`` call per sample and logit, flattened and concatenated."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for xi in x:
        out = model(xi.unsqueeze(0)).squeeze(0)
        per_logit = []
        for a in range(out.shape[0]):
            grads = torch.autograd.grad(out[a], params, retain_graph=True)
            per_logit.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_logit))
    return torch.stack(rows)


@pytest.mark.parametrize("shape", [(5, 7, 4, 6), (3, 16, 10, 9), (8, 4, 1, 5)])
def test_full_entk_equals_an_explicit_loop_of_autograd_gradients(shape: tuple[int, int, int, int]) -> None:
    d, width, o, n = shape
    model = mlp(d, width, o).double()
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x2 = torch.randn(n + 2, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    j, j2 = loop_jacobian(model, x), loop_jacobian(model, x2)
    expected = torch.einsum("iap,jbp->iajb", j, j)
    theta = functional.empirical_ntk(model, x)
    assert theta.shape == (n, o, n, o)
    torch.testing.assert_close(theta, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        functional.empirical_ntk(model, x, x2), torch.einsum("iap,jbp->iajb", j, j2), rtol=1e-12, atol=1e-12
    )


def test_full_entk_of_float32_model_and_output_subset() -> None:
    model = mlp(o=6)
    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(3))
    theta = functional.empirical_ntk(model, x)
    j = loop_jacobian(model, x).double()
    torch.testing.assert_close(theta, torch.einsum("iap,jbp->iajb", j, j), rtol=1e-5, atol=1e-6)
    keep = torch.tensor([1, 4])
    torch.testing.assert_close(functional.empirical_ntk(model, x, outputs=keep), theta[:, keep][:, :, :, keep])


def test_pseudo_ntk_is_the_mean_over_output_blocks_of_the_full_entk() -> None:
    model = mlp(o=5).double()
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    theta = functional.empirical_ntk(model, x)
    kappa = functional.pseudo_ntk(model, x)
    torch.testing.assert_close(kappa, theta.sum(dim=(1, 3)) / 5, rtol=1e-12, atol=1e-12)
    # the paper's definition directly: inner products of the gradients of Σ_a f_a(x) / √O
    params = list(model.parameters())
    grads = []
    for xi in x:
        g = torch.autograd.grad(model(xi.unsqueeze(0)).sum() / math.sqrt(5), params)
        grads.append(torch.cat([t.reshape(-1) for t in g]))
    g = torch.stack(grads)
    torch.testing.assert_close(kappa, g @ g.T, rtol=1e-12, atol=1e-12)


def test_lp_ntk_by_hand_on_a_linear_model() -> None:
    d, o = 3, 5  # not 4: there O − 4 = 0 would hide a sign error
    torch.manual_seed(0)
    model = nn.Linear(d, o).double()
    x = torch.randn(7, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 0, 1, 3, 1, 2, 4])
    # f_a(x) = w_a·x + b_a: ∂f_a/∂θ is x (and 1) on row a only, so Θ_ab(x, x') = δ_ab (x·x' + 1)
    base = x @ x.T + 1.0
    same = (y[:, None] == y[None, :]).double()
    dot = same * o + (1 - same) * (o - 4)  # s·s': +1 on the label, -1 elsewhere
    torch.testing.assert_close(functional.lp_ntk(model, x, y), base * dot / o, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(functional.pseudo_ntk(model, x), base, rtol=1e-12, atol=1e-12)
    theta = functional.empirical_ntk(model, x)
    assert functional.approximation_error(theta, functional.pseudo_ntk(model, x)) < 1e-12


def test_lp_ntk_is_the_signed_block_sum_and_the_signs_are_sign_of_e_y_minus_p() -> None:
    model = mlp(o=5).double()
    x = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    s = functional.label_signs(y, 5)
    with torch.no_grad():
        p = model(x).softmax(-1)
    assert torch.equal(s, torch.sign(torch.nn.functional.one_hot(y, 5).double() - p).float())
    theta = functional.empirical_ntk(model, x)
    expected = torch.einsum("ia,iajb,jb->ij", s.double(), theta, s.double()) / 5
    torch.testing.assert_close(functional.lp_ntk(model, x, y), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(functional.contract_outputs(theta, s), expected, rtol=1e-12, atol=1e-12)
    # restricted to active outputs: the inactive logits carry no sign and O counts the active ones
    keep = torch.tensor([0, 2, 3])
    s3 = functional.label_signs(torch.tensor([0, 2, 3, 0]), 5, keep)
    assert torch.equal(s3[:, [1, 4]], torch.zeros(4, 2)) and int((s3 != 0).any(0).sum()) == 3


def test_one_sgd_step_moves_the_function_along_the_kernel() -> None:
    """Kernel gradient descent (Jacot et al., Sec. 3): after one SGD step of size η on the cross-entropy of
    sample u, the logits of any x move by −η Θ(x, x_u) (p_u − e_{y_u}) + O(η²)."""
    model = mlp(o=4).double()
    x = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    xu, yu = x[:1], torch.tensor([2])
    theta = functional.empirical_ntk(model, x, xu)  # (5, O, 1, O)
    with torch.no_grad():
        before = model(x)
        residual = functional.residual_weights(model(xu), yu).double()  # e_y − p
    eta = 1e-5
    loss = torch.nn.functional.cross_entropy(model(xu), yu)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= eta * g
        moved = model(x) - before
    predicted = eta * torch.einsum("iab,b->ia", theta[:, :, 0, :], residual[0])
    torch.testing.assert_close(moved, predicted, rtol=1e-4, atol=1e-12)


def test_kernel_regression_closed_forms() -> None:
    g = torch.Generator().manual_seed(8)
    feats = torch.randn(10, 6, dtype=torch.float64, generator=g)
    k = feats @ feats.T
    y = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).double()
    k_train, k_cross = k[:6, :6], k[6:, :6]
    # ridge 0 interpolates the training targets; the formula with a ridge
    torch.testing.assert_close(functional.kernel_regression(k_train, k_train, y, 0.0), y, rtol=1e-8, atol=1e-8)
    lam = 0.1 * k_train.trace() / 6
    expected = k_cross @ torch.linalg.solve(k_train + lam * torch.eye(6, dtype=torch.float64), y)
    torch.testing.assert_close(functional.kernel_regression(k_train, k_cross, y, 0.1), expected)
    # an eNTK κ ⊗ I_O predicts what the N×N kernel κ predicts, for every output
    eye = torch.eye(3, dtype=torch.float64)
    full_train = k_train[:, None, :, None] * eye[None, :, None, :]
    full_cross = k_cross[:, None, :, None] * eye[None, :, None, :]
    torch.testing.assert_close(functional.kernel_regression(full_train, full_cross, y, 0.1), expected)
    # the linearised predictor: f0 + K(x*, X) K⁻¹ (Y − f0(X))
    f0_train, f0_test = (
        torch.randn(6, 3, dtype=torch.float64, generator=g),
        torch.randn(4, 3, dtype=torch.float64, generator=g),
    )
    lin = functional.kernel_regression(k_train, k_cross, y, 0.1, f0_train, f0_test)
    torch.testing.assert_close(
        lin, f0_test + k_cross @ torch.linalg.solve(k_train + lam * torch.eye(6, dtype=torch.float64), y - f0_train)
    )


def test_spectrum_and_changes() -> None:
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    k = q @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)) @ q.T
    stats = functional.spectrum(k)
    assert stats["trace"] == pytest.approx(7.5) and stats["top_eigenvalue"] == pytest.approx(4.0)
    assert stats["condition"] == pytest.approx(8.0)
    assert math.isinf(functional.spectrum(torch.zeros(3, 3))["condition"])
    theta = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    assert functional.as_matrix(theta).shape == (6, 6)
    assert functional.relative_change(2 * k, k) == pytest.approx(1.0)
    assert functional.kernel_distance(2 * k, k) == pytest.approx(0.0, abs=1e-12)
    assert functional.relative_change(k, k) == 0.0
    other = torch.eye(4, dtype=torch.float64)
    cos = float((k * other).sum() / (k.norm() * other.norm()))
    assert functional.kernel_distance(k, other) == pytest.approx(1 - cos)


def test_approximation_error_shrinks_with_the_readout_width() -> None:
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    errors = []
    for width in (4, 256):
        model = mlp(5, width, 5, seed=1, activation=nn.ReLU).double()
        errors.append(
            functional.approximation_error(functional.empirical_ntk(model, x), functional.pseudo_ntk(model, x))
        )
    assert errors[1] < errors[0] / 3


def test_evenly_spaced_samples_are_distinct_and_cover_the_set() -> None:
    ids = evenly_spaced(450, 64)
    assert len(ids) == 64 and len(set(ids.tolist())) == 64 and ids[0] == 0 and ids[-1] > 440
    assert evenly_spaced(5, 64).tolist() == [0, 1, 2, 3, 4]


def test_state_survives_the_checkpoint_codec() -> None:
    method = Ntk(None)
    method.initial = {"0/test": torch.randn(3, 3, dtype=torch.float64)}
    method.initial_metrics = {"trace": [1.5, 2.5]}
    again = Ntk(None)
    again.load_state_dict(checkpoint_round_trip(method.state_dict()))
    assert torch.equal(again.initial["0/test"], method.initial["0/test"])
    assert again.after_run() == {"initial/trace": 2.0}


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "ntk" in manifest["methods"]
    final, initial = results["final"], results["initial"]
    assert final["ntk/kernel_change"] > 0 and "ntk/kernel_change" not in initial
    assert 0.0 <= final["ntk/kernel_accuracy"] <= 1.0 and final["ntk/top_eigenvalue"] > 0
    assert results["summary"]["ntk"]["initial/trace"] == pytest.approx(initial["ntk/trace"])


PSEUDO_AND_LP = """
[run]
name = "ntk-kernels"
seeds = [0]
epochs = 1
save_model = false

[task]
name = "digits"

[model]
name = "mlp"
depth = 0
width = 32

[optimize]
use = "sgd"
lr = 0.1

[evaluate]
use = "ntk"
kernel = "{kernel}"
samples = 16
train_samples = 16
"""


@pytest.mark.parametrize("kernel", ["pseudo", "lp"])
def test_pseudo_and_lp_kernels_run(run_plan, kernel: str) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, _ = run_plan(PSEUDO_AND_LP.format(kernel=kernel))
    final, initial = results["final"], results["initial"]
    assert final["ntk/kernel_change"] > 0 and final["ntk/trace"] > 0
    if kernel == "pseudo":
        assert 0 < initial["ntk/approximation_error"] < 1 and "ntk/approximation_error" not in final
        assert 0.0 <= final["ntk/kernel_accuracy"] <= 1.0
    else:
        assert "ntk/kernel_accuracy" not in final  # the lpNTK of a test point would read its label
