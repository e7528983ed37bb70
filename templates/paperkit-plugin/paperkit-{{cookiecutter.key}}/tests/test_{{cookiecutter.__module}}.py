"""The math of {{ cookiecutter.key }}, then one end-to-end run of example.toml.

Math tests pin each function to a reference implementation where one exists
(PEFT, pytorch-optimizer, torch) and to invariants otherwise. Replace the
template's examples with tests of the paper's equations.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from {{ cookiecutter.__package }} import functional

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
{%- set hooks = cookiecutter.hooks.replace(' ', '').split(',') %}
{%- if 'init' in hooks %}


def test_scaled_normal_has_the_stated_std_and_zero_bias() -> None:
    layer = nn.Linear(400, 300)
    functional.scaled_normal_(layer, 2.0, torch.Generator().manual_seed(0))
    assert abs(layer.weight.std().item() - 2.0 / 400**0.5) < 0.002
    assert torch.count_nonzero(layer.bias) == 0


def test_scaled_normal_is_fixed_by_the_generator_seed() -> None:
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    functional.scaled_normal_(a, 1.0, torch.Generator().manual_seed(3))
    functional.scaled_normal_(b, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a.weight, b.weight)
{%- endif %}
{%- if 'adapt' in hooks %}


def test_only_biases_train_and_the_output_is_unchanged() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    before = model(x)
    assert functional.train_biases_only(model) == ["0.bias", "2.bias"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.bias", "2.bias"]
    assert torch.equal(model(x), before)
{%- endif %}
{%- if 'optimize' in hooks %}


def test_heavy_ball_matches_torch_sgd_with_momentum() -> None:
    torch.manual_seed(0)
    ours, reference = nn.Linear(6, 3), nn.Linear(6, 3)
    reference.load_state_dict(ours.state_dict())
    a = functional.HeavyBall(ours.parameters(), lr=0.1, momentum=0.9)
    b = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        x = torch.randn(8, 6)
        for model, optimizer in ((ours, a), (reference, b)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, reference.weight)
    torch.testing.assert_close(ours.bias, reference.bias)
{%- endif %}
{%- if 'loss' in hooks %}


def test_tempered_cross_entropy_at_t1_is_torchs_cross_entropy() -> None:
    logits, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    ours = functional.tempered_cross_entropy(logits, torch.nn.functional.one_hot(y, 4).double(), 1.0)
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    hotter = functional.tempered_cross_entropy(logits, torch.full((6, 4), 0.25, dtype=torch.float64), 1e6)
    torch.testing.assert_close(hotter, torch.full((6,), torch.log(torch.tensor(4.0)).item(), dtype=torch.float64))
{%- endif %}
{%- if 'regularize' in hooks %}


def test_l2_penalty_and_its_gradient() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    penalty = functional.l2_penalty([w, b])
    assert penalty.item() == 1.0 + 4.0 + 0.25 + 9.0
    penalty.backward()
    assert torch.equal(w.grad, 2 * w.detach()) and torch.equal(b.grad, 2 * b.detach())
{%- endif %}
{%- if 'evaluate' in hooks %}


def test_mean_confidence_bounds() -> None:
    assert abs(functional.mean_confidence(torch.zeros(4, 10)) - 0.1) < 1e-6
    assert functional.mean_confidence(torch.tensor([[100.0, 0.0], [0.0, 100.0]])) > 0.999
{%- endif %}
{%- if 'after_step' in hooks or 'after_run' in hooks %}


def test_weight_norm_is_the_norm_of_the_trainable_parameters() -> None:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0.0]]))
        layer.bias.fill_(4.0)
    assert functional.weight_norm(layer) == 5.0
    layer.bias.requires_grad_(False)  # frozen parameters are not counted
    assert functional.weight_norm(layer) == 3.0
{%- endif %}
{%- if 'continual_step' in hooks %}


def test_add_noise_has_the_stated_std_and_is_seeded() -> None:
    x = torch.zeros(200, 50)
    a = functional.add_noise(x, 0.3, torch.Generator().manual_seed(1))
    assert abs(a.std().item() - 0.3) < 0.01
    assert torch.equal(a, functional.add_noise(x, 0.3, torch.Generator().manual_seed(1)))
    assert torch.equal(functional.add_noise(x, 0.0, torch.Generator()), x)
{%- endif %}


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "{{ cookiecutter.key }}" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
