"""IDInit: the exact matrices of IDI_τ (Eq. 3), IDIZ_ε and IDIC_τ for small shapes, the
invariants a wrong formula breaks (no dead rows in a tall IDI, cancelling halves of IDIZ_ε,
patch-maintain = im2col, the identity through square layers), ε placement in residual
blocks, the relation to ZerO, determinism, and an end-to-end run of example.toml."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_idinit import IDInitConfig
from paperkit_idinit.functional import (
    DEFAULT_RESIDUAL_ENDS,
    idi_conv_kernel,
    idi_matrix,
    idinit_,
    idiz_matrix,
)
from paperkit_idinit.hooks import IDInit
from torch import nn

from paperkit import CNN, MLP, PluginError

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def mlp(depth: int = 4, width: int = 128, residual: bool = True, norm: str = "none") -> MLP:
    config = SimpleNamespace(depth=depth, width=width, activation="relu", norm=norm, residual=residual,
                             dropout=0.0, bias=True)
    return MLP(64, 10, config)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# -- IDI_τ, Eq. (3): θ[m, j] = τ iff m ≡ j (mod D_in) --------------------------------------------
def test_idi_square_is_tau_times_identity():
    assert torch.equal(idi_matrix(3, 3), torch.eye(3))
    assert torch.equal(idi_matrix(4, 4, 0.5), 0.5 * torch.eye(4))


def test_idi_tall_repeats_the_identity_down_the_rows():
    expected = t([[1, 0, 0],
                  [0, 1, 0],
                  [0, 0, 1],
                  [1, 0, 0],
                  [0, 1, 0]])
    assert torch.equal(idi_matrix(5, 3), expected)
    assert torch.equal(idi_matrix(6, 2, 2.0), 2.0 * torch.cat([torch.eye(2)] * 3))


def test_idi_wide_passes_the_first_inputs():
    expected = t([[1, 0, 0, 0, 0],
                  [0, 1, 0, 0, 0],
                  [0, 0, 1, 0, 0]])
    assert torch.equal(idi_matrix(3, 5), expected)


@pytest.mark.parametrize("out, inp", [(5, 3), (128, 64), (100, 64), (64, 128), (10, 128), (7, 7), (9, 1)])
def test_idi_has_full_rank_and_no_dead_output_unit(out, inp):
    """A tall IDI keeps every output unit alive (one τ per row); zero padding leaves out − in rows empty."""
    w = idi_matrix(out, inp)
    assert torch.linalg.matrix_rank(w.double()).item() == min(out, inp)
    assert torch.count_nonzero(w.abs().sum(1)).item() == out
    assert torch.count_nonzero(w).item() == out  # exactly one τ per row
    zero_padded = torch.eye(out, inp)
    assert torch.count_nonzero(zero_padded.abs().sum(1)).item() == min(out, inp)


def test_tall_idi_feeds_every_column_of_the_next_layer_unlike_zero_padding():
    """The rank constraint of zero padding (Sec. 3.2): the layer after a widening one sees only D_in
    non-zero units, so its other columns never receive a gradient; IDI's repeated identity feeds all."""
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    columns = {}
    for kind, stem in (("idi", idi_matrix(48, 16)), ("zero padding", torch.eye(48, 16))):
        w = torch.eye(48, requires_grad=True)
        (torch.relu(x @ stem.T) @ w.T).pow(2).sum().backward()
        columns[kind] = torch.count_nonzero(w.grad.abs().sum(0)).item()
    assert columns == {"idi": 48, "zero padding": 16}


def test_loose_condition_perturbs_only_the_identity_entries():
    g = torch.Generator().manual_seed(3)
    w = idi_matrix(12, 5, 1.0, loose=0.1, generator=g)
    pattern = idi_matrix(12, 5)
    assert torch.equal(w != 0, pattern != 0)
    assert not torch.equal(w, pattern) and (w - pattern).abs().max() < 1.0
    again = idi_matrix(12, 5, 1.0, loose=0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(w, again)


# -- IDIZ_ε ---------------------------------------------------------------------------------------
def test_idiz_square_holds_plus_and_minus_eps_halves():
    e = 1e-3
    expected = t([[e, 0, -e, 0],
                  [0, e, 0, -e],
                  [e, 0, -e, 0],
                  [0, e, 0, -e]])
    assert torch.equal(idiz_matrix(4, 4, e), expected)


def test_idiz_wide_and_odd_leaves_the_last_column_zero():
    e = 0.5
    expected = t([[e, 0, -e, 0, 0],
                  [0, e, 0, -e, 0],
                  [e, 0, -e, 0, 0]])
    assert torch.equal(idiz_matrix(3, 5, e), expected)
    assert torch.count_nonzero(idiz_matrix(6, 1, e)) == 0  # one input: nothing to cancel against
    assert torch.count_nonzero(idiz_matrix(8, 8, 0.0)) == 0  # ε = 0: the exact zero of Fixup / ZerO


@pytest.mark.parametrize("out, inp", [(128, 128), (64, 256), (10, 40), (33, 17)])
def test_idiz_rows_sum_to_zero_and_are_tiny(out, inp):
    """Mean-zero output for exchangeable hidden units: every row holds as many +ε as −ε."""
    w = idiz_matrix(out, inp, 1e-6).double()
    assert torch.allclose(w.sum(1), torch.zeros(out, dtype=torch.float64), atol=0, rtol=0)
    assert w.abs().max().item() == pytest.approx(1e-6)


def test_idiz_cancels_exactly_on_an_input_repeated_with_its_half_period():
    h = torch.randn(5, 24, generator=torch.Generator().manual_seed(1))
    tiled = torch.cat([h, h], 1)  # what a tall IDI (or the mlp's stem) hands the branch
    cancelled = (tiled @ idiz_matrix(48, 48, 1e-3).T).abs().max().item()
    generic = (h @ idiz_matrix(24, 24, 1e-3).T).abs().max().item()
    assert cancelled < 1e-9 < 1e-4 < generic  # zero up to the rounding of a fused multiply-add


def test_idiz_leaves_no_column_dead():
    w = idiz_matrix(128, 128, 1e-6)
    assert torch.count_nonzero(w.abs().sum(0)) == 128 and torch.count_nonzero(w.abs().sum(1)) == 128


# -- IDIC_τ, patch-maintain, and the channel-maintain centre ---------------------------------------
def test_patch_kernel_by_hand():
    k = idi_conv_kernel(4, 1, (3, 3))
    assert torch.equal(k.reshape(4, 9), torch.eye(4, 9))
    assert k[3, 0, 1, 0] == 1 and torch.count_nonzero(k) == 4
    wide = idi_conv_kernel(2, 2, (3, 3))  # D_in = 18: both outputs read input channel 0
    assert wide[0, 0, 0, 0] == 1 and wide[1, 0, 0, 1] == 1 and torch.count_nonzero(wide[:, 1]) == 0
    tall = idi_conv_kernel(20, 2, (1, 1))  # a 1x1 conv is IDI of c_out x c_in
    assert torch.equal(tall[:, :, 0, 0], idi_matrix(20, 2))


def test_patch_maintain_with_c_out_equal_to_the_patch_size_is_im2col():
    """c_out = c_in·k·k: output channel i·9 + s is input channel i shifted to kernel position s."""
    conv = nn.Conv2d(2, 18, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(idi_conv_kernel(18, 2, (3, 3)))
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    unfolded = nn.functional.unfold(x, 3, padding=1).reshape(3, 18, 6, 6)
    assert torch.equal(conv(x), unfolded)


def test_channel_maintain_square_conv_is_the_identity_map():
    kernel = idi_conv_kernel(6, 6, (3, 3), mode="channel")
    assert torch.equal(kernel[:, :, 1, 1], torch.eye(6)) and torch.count_nonzero(kernel) == 6
    conv = nn.Conv2d(6, 6, 3, padding=1)
    idinit_(conv, conv="channel")
    x = torch.randn(2, 6, 5, 5)
    assert torch.equal(conv(x), x)


def test_conv_residual_end_gets_idiz_in_the_conv_layout():
    k = idi_conv_kernel(4, 4, (3, 3), zero_preserving=1e-3)
    assert torch.equal(k.reshape(4, 36), idiz_matrix(4, 36, 1e-3))
    c = idi_conv_kernel(4, 4, (3, 3), mode="channel", zero_preserving=1e-3)
    assert torch.equal(c[:, :, 1, 1], idiz_matrix(4, 4, 1e-3)) and torch.count_nonzero(c[:, :, 0]) == 0


def test_even_kernels_in_channel_mode_and_grouped_convs_are_refused():
    with pytest.raises(ValueError, match="odd kernel"):
        idi_conv_kernel(4, 4, (2, 2), mode="channel")
    with pytest.raises(ValueError, match="groups"):
        idinit_(nn.Conv2d(4, 4, 3, groups=2))
    assert idi_conv_kernel(4, 4, (2, 2)).shape == (4, 4, 2, 2)  # patch mode needs no centre


# -- whole networks -------------------------------------------------------------------------------
def test_mlp_layers_get_their_rule_and_eps_sits_at_the_residual_ends():
    model = mlp(depth=3, width=128)
    done = idinit_(model, eps=1e-6)
    assert done["stem.0"] == "IDI tall 128x64" and done["head"] == "IDI wide 10x128"
    for block in model.blocks:
        assert torch.equal(block.linear1.weight, torch.eye(128))
        assert torch.equal(block.linear2.weight, idiz_matrix(128, 128, 1e-6))
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Linear))


def test_residual_net_is_exactly_head_relu_stem_at_init():
    """Tiled stem + identity blocks + cancelling IDIZ_ε: the whole net is exactly relu([x; x])[:, :10]."""
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(4))
    for eps in (1e-6, 0.0):
        model = mlp(depth=8, width=128)
        idinit_(model, eps=eps)
        with torch.no_grad():
            assert torch.equal(model(x), torch.relu(x)[:, :10])


def test_a_plain_deep_mlp_is_the_identity_through_its_square_layers():
    model = mlp(depth=6, width=64, residual=False)
    idinit_(model)
    x = torch.randn(8, 64)
    with torch.no_grad():
        assert torch.equal(model.features(x), torch.relu(x))


def test_eps_reaches_the_first_layer_of_each_branch_from_the_first_step():
    """The dead-neuron fix: with ε > 0, ∂L/∂W1 = (W2ᵀ g ⊙ relu') xᵀ is non-zero at step one; with ε = 0 it is 0."""
    x, y = torch.randn(32, 64, generator=torch.Generator().manual_seed(5)), torch.arange(32) % 10
    grads = {}
    for eps in (1e-3, 0.0):
        model = mlp(depth=2, width=48)  # wide stem: the branch input does not repeat, nothing cancels
        idinit_(model, eps=eps)
        nn.functional.cross_entropy(model(x), y).backward()
        grads[eps] = [torch.count_nonzero(b.linear1.weight.grad).item() for b in model.blocks]
    assert all(n > 0 for n in grads[1e-3]) and grads[0.0] == [0, 0]


def test_cnn_and_norm_layers_are_covered():
    model = CNN((1, 8, 8), 10, SimpleNamespace(channels=16, width=64, norm="batch"))
    with torch.no_grad():
        model.conv[1].weight.fill_(3.0)
    done = idinit_(model)
    assert done["conv.0"] == "IDIC patch 16x1x3x3" and done["conv.3"] == "IDIC patch 32x16x3x3"
    assert done["conv.1"] == "norm defaults" and torch.equal(model.conv[1].weight, torch.ones(16))
    assert torch.equal(model.conv[0].weight, idi_conv_kernel(16, 1, (3, 3)))
    assert done["fc.1"] == "IDI wide 64x512"


def test_transformer_projections_and_residual_ends():
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, 16)
            self.position = nn.Parameter(torch.randn(1, 4, 16))
            layer = nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    model = Tiny()
    position = model.position.detach().clone()
    done = idinit_(model, eps=1e-6)
    attn = model.encoder.layers[0].self_attn
    assert torch.equal(attn.in_proj_weight, torch.cat([torch.eye(16)] * 3))  # q = k = v = x
    assert torch.equal(attn.out_proj.weight, idiz_matrix(16, 16, 1e-6))
    assert torch.equal(model.encoder.layers[1].linear2.weight, idiz_matrix(16, 32, 1e-6))
    assert torch.equal(model.encoder.layers[1].linear1.weight, idi_matrix(32, 16))
    assert done["<root>"] == "left as built (Tiny)" and torch.equal(model.position, position)


def test_equals_zero_init_where_every_layer_is_square_or_narrowing_and_eps_is_zero():
    """ZerO and IDInit agree on square (identity) and narrowing (partial identity) layers; with
    width = input size the only difference left is ε."""
    from paperkit_zero_init.functional import zero_init_

    a, b = mlp(depth=3, width=64), mlp(depth=3, width=64)
    idinit_(a, eps=0.0)
    zero_init_(b)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    wide_a, wide_b = mlp(depth=1, width=128), mlp(depth=1, width=128)
    idinit_(wide_a, eps=0.0)
    zero_init_(wide_b)
    assert not torch.equal(wide_a.stem[0].weight, wide_b.stem[0].weight)  # repeated identity vs Hadamard


def test_initialization_is_identical_for_every_seed_bit_for_bit():
    states = []
    for seed in (0, 1, 12345):
        torch.manual_seed(seed)
        model = mlp(depth=4)
        idinit_(model)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], other[k]) for other in states[1:] for k in states[0])


def test_an_idinit_residual_mlp_learns_and_sgd_breaks_the_symmetry():
    torch.manual_seed(0)
    model = mlp(depth=4, width=32)
    idinit_(model)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    for block in model.blocks:
        assert not torch.equal(block.linear1.weight, torch.eye(32))
        assert not torch.equal(block.linear2.weight, idiz_matrix(32, 32))


# -- the hook ---------------------------------------------------------------------------------------
def test_residual_ends_that_name_no_layer_are_a_one_line_error():
    with pytest.raises(PluginError, match=r"residual_ends pattern\(s\) 'blocks\.\*\.linear3' match no Linear"):
        IDInit(IDInitConfig(residual_ends=["blocks.*.linear3"])).init(mlp(depth=2), SimpleNamespace())
    plain = mlp(depth=2, residual=False)  # the default names residual ends; a plain mlp has none
    done = idinit_(plain, DEFAULT_RESIDUAL_ENDS)
    assert "IDIZ" not in " ".join(done.values())


def test_config_validates_its_ranges():
    for bad in ({"eps": -1e-6}, {"eps": 1.0}, {"tau": 0.0}, {"tau": float("nan")}, {"loose": -0.1}, {"conv": "dirac"}):
        with pytest.raises((ValueError, TypeError)):
            IDInitConfig(**bad)


def test_example_plan_runs_end_to_end_and_identically_for_two_seeds(run_plan):
    text = EXAMPLE.read_text(encoding="utf-8")
    results, manifest = run_plan(text, seed=0, overrides=("run.epochs=1",))
    assert results["status"] == "completed" and manifest["methods"][0] == "idinit"
    initial = run_plan(text, seed=0, overrides=("run.train=false",))[0]["final"]
    assert initial == run_plan(text, seed=1, overrides=("run.train=false",))[0]["final"]
