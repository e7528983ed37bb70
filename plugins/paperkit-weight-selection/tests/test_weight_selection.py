"""Weight selection: the index rules against hand-computed cases, consistency across layers, layer selection,
the head and buffers, the one-line errors, and one end-to-end run of example.toml.

No runnable reference exists on CPU without downloading timm weights; the reference code's rule
(``uniform_element_selection`` in OscarXZQ/weight-selection) is pinned by hand-computed index sets,
including its single-precision ``linspace`` and round-half-to-even ties.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_weight_selection import functional as F
from torch import nn

from paperkit import MLP, PlanError, save_weights

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def mlp(width: int, depth: int, inputs: int = 6, classes: int = 3, **options: object) -> MLP:
    config = {
        "width": width,
        "depth": depth,
        "activation": "relu",
        "norm": "none",
        "residual": False,
        "dropout": 0.0,
        "bias": True,
        "maxout_pieces": 2,
        "sine_w0": 30.0,
        "ghost_batch": 32,
        **options,
    }
    return MLP(inputs, classes, SimpleNamespace(**config))


# -- the index rules ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("teacher", "student", "expected"),
    [
        (6, 3, [0, 2, 4]),  # 3 divides 6: every 2nd index from 0
        (256, 32, list(range(0, 256, 8))),  # every 8th
        (5, 5, [0, 1, 2, 3, 4]),  # same size: all, in order
        (7, 1, [0]),
        (7, 3, [0, 3, 6]),  # round(linspace(0, 6, 3)) = 0, 3, 6
        (6, 4, [0, 2, 3, 5]),  # 0, 1.67, 3.33, 5
        (8, 3, [0, 4, 7]),  # 0, 3.5, 7: the tie rounds to even
        (100, 7, [0, 16, 33, 50, 66, 82, 99]),  # 16.5 -> 16 and 49.5 -> 50 (ties to even)
        (10, 4, [0, 3, 6, 9]),
    ],
)
def test_uniform_indices_hand_cases(teacher: int, student: int, expected: list[int]) -> None:
    assert F.uniform_indices(teacher, student).tolist() == expected


def test_uniform_indices_follow_single_precision_linspace() -> None:
    # 26 -> 23: position 11 is 11 * 25 / 22 = 12.5 exactly, a tie that rounds to even (12) in the reference
    # code's float32 linspace; NumPy's float64 linspace gives 12.500000000000002 there and would keep 13.
    assert F.uniform_indices(26, 23)[11].item() == 12


def test_uniform_indices_are_sorted_distinct_and_evenly_spread() -> None:
    for t in range(1, 70):
        for s in range(1, t + 1):
            idx = F.uniform_indices(t, s)
            assert len(idx) == s and idx[0] == 0 and int(idx.max()) <= t - 1
            assert bool((idx[1:] > idx[:-1]).all()), (t, s)
            if t % s:
                assert idx[-1] == t - 1  # the non-divisible rule spans the whole range
                ideal = torch.arange(s) * (t - 1) / (s - 1)
                assert float((idx - ideal).abs().max()) <= 0.5 + 1e-4


def test_consecutive_and_random_indices() -> None:
    assert F.consecutive_indices(9, 4).tolist() == [0, 1, 2, 3]
    a = F.random_indices(50, 10, torch.Generator().manual_seed(1))
    b = F.random_indices(50, 10, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and len(set(a.tolist())) == 10 and bool((a[1:] > a[:-1]).all())
    assert 0 <= int(a.min()) and int(a.max()) < 50


def test_select_elements_by_hand() -> None:
    w = torch.arange(24.0).reshape(6, 4)
    # rows 6 -> 3: 0, 2, 4; columns 4 -> 2: 0, 2
    assert F.select_elements(w, (3, 2)).tolist() == [[0.0, 2.0], [8.0, 10.0], [16.0, 18.0]]
    bias = torch.arange(8.0)
    assert F.select_elements(bias, (3,)).tolist() == [0.0, 4.0, 7.0]
    counter = torch.tensor(17)
    assert F.select_elements(counter, ()).item() == 17


# -- consistency across layers --------------------------------------------------------------------
def _tag_chain(model: nn.Module) -> None:
    """Weights that name their units: ``W[r, c] = 1000·r + c`` in every linear layer (output r, input c)."""
    with torch.no_grad():
        for layer in (model.stem[0], *[b.linear1 for b in model.blocks], model.head):
            rows, cols = layer.weight.shape
            layer.weight.copy_(1000 * torch.arange(rows)[:, None] + torch.arange(cols)[None, :])


def _units(selected: torch.Tensor) -> tuple[list[int], list[int]]:
    """The teacher's (output units, input units) that a selected weight kept."""
    return (selected[:, 0] // 1000).long().tolist(), (selected[0, :] % 1000).long().tolist()


@pytest.mark.parametrize(("elements", "consistent"), [("uniform", True), ("consecutive", True), ("random", True)])
def test_kept_outputs_of_a_layer_are_the_kept_inputs_of_the_next(elements: str, consistent: bool) -> None:
    teacher, student = mlp(40, 3), mlp(12, 2)
    _tag_chain(teacher)
    selector = F.ElementSelector(elements, consistent, torch.Generator().manual_seed(0))
    chosen = F.select_weights(teacher.state_dict(), student.state_dict(), selector=selector, select_head=True)
    kept, inputs = _units(chosen["stem.0.weight"])
    assert inputs == list(range(6)) and len(set(kept)) == 12  # every input pixel, 12 distinct hidden units
    for name in ("blocks.0.linear1.weight", "blocks.1.linear1.weight"):
        assert _units(chosen[name]) == (kept, kept), name  # its inputs are the previous layer's kept outputs
    assert _units(chosen["head.weight"]) == ([0, 1, 2], kept)
    assert chosen["blocks.0.linear1.bias"].shape == (12,)


def test_random_selection_without_consistency_breaks_the_correspondence() -> None:
    teacher, student = mlp(40, 3), mlp(12, 2)
    _tag_chain(teacher)
    selector = F.ElementSelector("random", False, torch.Generator().manual_seed(0))
    chosen = F.select_weights(teacher.state_dict(), student.state_dict(), selector=selector)
    kept, _ = _units(chosen["stem.0.weight"])
    assert _units(chosen["blocks.0.linear1.weight"])[1] != kept


@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_a_student_embedded_in_a_teacher_is_selected_back_exactly(activation: str) -> None:
    """A linear chain's selection equals the selection of its product where that holds: when the teacher's
    hidden units outside the kept ones are disconnected (zero weights in and out), the selected student
    computes exactly the teacher's function (and is the student that was embedded)."""
    torch.manual_seed(0)
    small, big = mlp(4, 2, activation=activation), mlp(10, 2, activation=activation)
    keep = F.uniform_indices(10, 4)
    with torch.no_grad():
        for p in big.parameters():
            p.zero_()
        for name, tensor in small.state_dict().items():
            target = big.state_dict()[name]
            index = [keep if t != s else slice(None) for t, s in zip(target.shape, tensor.shape)]
            target[torch.meshgrid(*[torch.arange(n)[i] for n, i in zip(target.shape, index)], indexing="ij")] = tensor
    x = torch.randn(16, 6)
    assert torch.allclose(big(x), small(x), atol=1e-6)
    student = mlp(4, 2, activation=activation)
    F.weight_selection_(student, big.state_dict(), select_head=True)
    for name, value in small.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name
    assert torch.allclose(student(x), big(x), atol=1e-6)


# -- layer selection, head, buffers ---------------------------------------------------------------
def _mark_blocks(model: nn.Module) -> None:
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            block.linear1.weight.fill_(float(i))


@pytest.mark.parametrize(("layers", "expected"), [("first-n", [0.0, 1.0]), ("uniform", [0.0, 2.0])])
def test_layer_selection(layers: str, expected: list[float]) -> None:
    teacher, student = mlp(16, 4), mlp(8, 2)
    _mark_blocks(teacher)
    F.weight_selection_(student, teacher.state_dict(), layers=layers)
    assert [float(b.linear1.weight.detach().unique()) for b in student.blocks] == expected
    three = mlp(16, 3)
    _mark_blocks(three)
    F.weight_selection_(student, three.state_dict(), layers=layers)  # uniform 3 -> 2: round(linspace(0, 2, 2))
    assert [float(b.linear1.weight.detach().unique()) for b in student.blocks] == (
        [0.0, 1.0] if layers == "first-n" else [0.0, 2.0]
    )


def test_the_head_keeps_its_own_init_unless_selected() -> None:
    teacher, student = mlp(16, 2), mlp(8, 2)
    before = student.head.weight.detach().clone()
    keys = F.weight_selection_(student, teacher.state_dict())
    assert "head.weight" not in keys and "stem.0.weight" in keys
    assert torch.equal(student.head.weight, before)
    assert torch.equal(student.stem[0].weight, F.select_elements(teacher.stem[0].weight, (8, 6)))
    F.weight_selection_(student, teacher.state_dict(), select_head=True)
    assert torch.equal(student.head.weight, teacher.head.weight[:, ::2])


def test_norm_parameters_and_statistics_are_selected() -> None:
    teacher, student = mlp(16, 1, norm="batch"), mlp(8, 1, norm="batch")
    with torch.no_grad():
        teacher.blocks[0].norm.running_mean.copy_(torch.arange(16.0))
        teacher.blocks[0].norm.weight.copy_(torch.arange(16.0) + 100)
        teacher.blocks[0].norm.num_batches_tracked.fill_(7)
    F.weight_selection_(student, teacher.state_dict())
    assert student.blocks[0].norm.running_mean.tolist() == list(range(0, 16, 2))
    assert student.blocks[0].norm.weight.tolist() == [100.0 + i for i in range(0, 16, 2)]
    assert int(student.blocks[0].norm.num_batches_tracked) == 7


# -- errors ---------------------------------------------------------------------------------------
def test_mismatches_are_value_errors_naming_the_tensor() -> None:
    with pytest.raises(ValueError, match=r"'stem.0.weight' is \(8, 6\) in the teacher, smaller than the student's"):
        F.select_weights(mlp(8, 2).state_dict(), mlp(16, 2).state_dict())
    with pytest.raises(ValueError, match=r"the teacher has no 'blocks.2.linear1.weight'"):
        F.select_weights(mlp(16, 2).state_dict(), mlp(8, 3).state_dict())
    with pytest.raises(ValueError, match=r"'blocks' has 2 layers in the teacher, fewer than the student's 3"):
        F.select_weights(mlp(16, 2).state_dict(), mlp(8, 3).state_dict(), layers="uniform")
    with pytest.raises(ValueError, match=r"the teacher has no 'stem.1.weight'"):
        F.select_weights(mlp(16, 2).state_dict(), mlp(8, 2, norm="layer").state_dict())


PLAN = """
[run]
name = "ws-mismatch"
max_steps = 2
batch_size = 32
save_model = false

[task]
name = "digits"

[model]
name = "mlp"
depth = 1
width = 32

[optimize]
use = "adamw"
lr = 0.01

[init]
use = "weight-selection"
teacher = "{teacher}"
"""


def test_a_teacher_smaller_than_the_student_is_a_one_line_plan_error(run_plan, tmp_path: Path) -> None:  # noqa: ANN001
    small = tmp_path / "small.safetensors"
    save_weights(mlp(16, 1, inputs=64, classes=10), small)
    with pytest.raises(PlanError) as caught:
        run_plan(PLAN.format(teacher=small.as_posix()))
    message = str(caught.value)
    assert "\n" not in message and "weight-selection teacher" in message
    assert "'stem.0.weight' is (16, 64) in the teacher, smaller than the student's (32, 64)" in message


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), variant="weight-selection")
    assert results["status"] == "completed"
    assert "weight-selection" in manifest["methods"]
    assert results["steps"] > 0 and results["final"]["classification/accuracy"] > 0.5
