"""PS-KD against a transcription of the authors' training loop and metrics; hook behaviour; end-to-end plans."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from paperkit_ps_kd import PsKdConfig, method
from paperkit_ps_kd.functional import (
    alpha_at,
    aurc,
    calibration_scores,
    expected_calibration_error,
    progressive_targets,
    soft_cross_entropy,
)
from paperkit_ps_kd.hooks import PsKd, current_predictions, first_occurrence, gather_global_batch, table_shape
from torch import nn

import paperkit
from paperkit.testing import checkpoint_round_trip

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


# -- the authors' code, transcribed (lgcnsai/PS-KD-Pytorch main.py, loss/pskd_loss.py, utils/metric.py) -------------
def reference_training(model, x, y, batches, epochs, alpha_T, lr, classes):
    """main.py's PS-KD loop: a zero table, filled with one-hot labels in epoch 0, soft targets
    (1 - a_t) onehot + a_t table[idx] with a_t = alpha_T (epoch + 1) / epochs, the loss
    (-t * log_softmax).mean(0).sum(), and the softmax of the training outputs written back after the step."""
    table = torch.zeros(len(x), classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    targets_seen = []
    for epoch in range(epochs):
        alpha_t = alpha_T * ((epoch + 1) / epochs)
        for idx in batches[epoch]:
            onehot = torch.eye(classes)[y[idx]]
            if epoch == 0:
                table[idx] = onehot
            soft = (1 - alpha_t) * onehot + alpha_t * table[idx]
            targets_seen.append(soft)
            out = model(x[idx])
            loss = (-soft * F.log_softmax(out, dim=1)).mean(0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            table[idx] = F.softmax(out, dim=1).detach()
    return table, targets_seen


def reference_ece_aurc(probs: np.ndarray, labels: np.ndarray, bin_size: float = 0.1):
    """utils/metric.py's metric_ece_aurc_eaurc: ECE x100 over (lower, upper] bins, AURC and E-AURC x1000."""
    pred, conf = probs.argmax(1), probs.max(1)
    total, ces = len(probs), []
    for upper in np.arange(bin_size, 1 + bin_size, bin_size):
        lower = upper - bin_size
        inside = (conf > lower) & (conf <= upper)
        if inside.sum():
            ces.append(abs((pred[inside] == labels[inside]).mean() - conf[inside].mean()) * inside.sum())
    ece = 100 * sum(ces) / total
    order = np.argsort(conf)[::-1]
    wrong = (labels[order] != pred[order]).astype(float)
    n, errors = len(labels), int(wrong.sum())
    value = np.mean(np.cumsum(wrong) / np.arange(1, n + 1))
    best = np.sum(np.arange(1, errors + 1) / (n - errors + np.arange(1, errors + 1))) / n
    return ece, value * 1000, (value - best) * 1000


# -- a run context the hook can read ---------------------------------------------------------------------------
class _Train:
    def __init__(self, index):
        self.index = torch.as_tensor(index)

    def __len__(self):
        return len(self.index)


def _ctx(samples, classes, epochs=1, steps_per_epoch=1, experiences=None, accelerator=None):
    experiences = experiences or [SimpleNamespace(index=0, train=_Train(torch.arange(samples)))]
    task = SimpleNamespace(scenario="single", experiences=experiences, info=SimpleNamespace(num_classes=classes))
    return SimpleNamespace(
        task=task,
        experience=experiences[0],
        experience_index=0,
        epoch=0,
        steps_per_epoch=steps_per_epoch,
        total_steps=epochs * steps_per_epoch,
        accelerator=accelerator or SimpleNamespace(num_processes=1),
        plan=SimpleNamespace(run=SimpleNamespace(epochs=epochs)),
    )


def _model(features=6, classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, classes))


# -- the training loop ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha_T, epochs, batch", [(0.8, 4, 8), (0.5, 3, 5)])
def test_hook_and_builtin_loss_equal_the_reference_loop(alpha_T, epochs, batch):
    """Targets at every step and the final weights: our hook + the built-in soft cross-entropy vs main.py."""
    g = torch.Generator().manual_seed(1)
    n, classes = 23, 4
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, classes, (n,), generator=g)
    batches = [list(torch.randperm(n, generator=g).split(batch)) for _ in range(epochs)]
    reference = _model()
    table, expected_targets = reference_training(reference, x, y, batches, epochs, alpha_T, 0.1, classes)

    ours = _model()
    hook = PsKd(PsKdConfig(alpha_T=alpha_T))
    ctx = _ctx(n, classes, epochs, len(batches[0]))
    opt = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    step = 0
    for epoch in range(epochs):
        ctx.epoch = epoch
        for idx in batches[epoch]:
            out = hook.continual_step({"x": x[idx], "y": y[idx], "index": idx}, ours, ctx)
            torch.testing.assert_close(out["target"], expected_targets[step], rtol=0, atol=1e-7)
            loss = F.cross_entropy(ours(out["x"]), out["target"])  # what paperkit's cross-entropy computes
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    for a, b in zip(reference.parameters(), ours.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the reference writes the training pass's softmax after the step; ours is the same pass made just before it
    torch.testing.assert_close(hook.table.probs, table, rtol=1e-5, atol=1e-6)


def test_first_epoch_trains_on_the_labels_exactly():
    hook = PsKd(PsKdConfig(alpha_T=0.8))
    ctx = _ctx(10, 3, epochs=5)
    batch = {"x": torch.randn(4, 6), "y": torch.tensor([0, 2, 1, 2]), "index": torch.tensor([1, 3, 5, 7])}
    out = hook.continual_step(batch, _model(classes=3), ctx)
    assert torch.equal(out["target"], F.one_hot(batch["y"], 3).float())
    assert set(out) == {"x", "y", "index", "target"} and out["x"] is batch["x"]


def test_second_epoch_mixes_the_label_with_the_recorded_prediction():
    model = _model(classes=3)
    hook = PsKd(PsKdConfig(alpha_T=0.6))
    ctx = _ctx(10, 3, epochs=3)
    batch = {"x": torch.randn(4, 6), "y": torch.tensor([0, 2, 1, 2]), "index": torch.tensor([1, 3, 5, 7])}
    hook.continual_step(batch, model, ctx)
    p = F.softmax(model(batch["x"]), -1).detach()
    ctx.epoch = 1
    out = hook.continual_step(batch, model, ctx)
    alpha = 0.6 * 2 / 3
    torch.testing.assert_close(out["target"], (1 - alpha) * F.one_hot(batch["y"], 3).float() + alpha * p)
    torch.testing.assert_close(out["target"].sum(-1), torch.ones(4))


def test_an_earlier_soft_target_is_what_gets_mixed():
    """Label smoothing (or any method) before PS-KD: its target replaces the one-hot label in the mix."""
    model = _model(classes=3)
    hook, ctx = PsKd(PsKdConfig(alpha_T=1.0)), _ctx(10, 3, epochs=2)
    smooth = torch.full((2, 3), 0.1).index_put_((torch.arange(2), torch.tensor([0, 1])), torch.tensor(0.8))
    batch = {"x": torch.randn(2, 6), "y": torch.tensor([0, 1]), "index": torch.tensor([0, 1]), "target": smooth}
    assert torch.equal(hook.continual_step(dict(batch), model, ctx)["target"], smooth)  # epoch 0: kept as is
    ctx.epoch = 1
    p = F.softmax(model(batch["x"]), -1).detach()
    torch.testing.assert_close(hook.continual_step(dict(batch), model, ctx)["target"], 0.0 * smooth + 1.0 * p)


def test_a_new_experience_starts_again_from_the_labels():
    exps = [SimpleNamespace(index=i, train=_Train(torch.arange(5) + 5 * i)) for i in range(2)]
    hook, ctx, model = PsKd(PsKdConfig()), _ctx(10, 3, epochs=2, experiences=exps), _model(classes=3)
    batch = {"x": torch.randn(3, 6), "y": torch.tensor([0, 1, 2]), "index": torch.tensor([0, 1, 2])}
    hook.continual_step(batch, model, ctx)
    ctx.epoch, ctx.experience, ctx.experience_index = 0, exps[1], 1
    out = hook.continual_step(batch, model, ctx)  # same indices, another experience: no past prediction
    assert torch.equal(out["target"], F.one_hot(batch["y"], 3).float())
    assert table_shape(ctx.task) == (10, 3)


def test_alpha_schedule_is_the_reference_formula():
    for epochs in (1, 7, 300):
        values = [alpha_at(e, epochs, 0.8) for e in range(epochs)]
        assert values == [0.8 * ((e + 1) / epochs) for e in range(epochs)]
        assert values[-1] == pytest.approx(0.8)
    assert alpha_at(12, 10, 0.8) == 0.8  # never beyond alpha_T


def test_alpha_counts_the_epochs_of_the_experience_from_its_steps():
    hook = PsKd(PsKdConfig(alpha_T=0.8))
    ctx = _ctx(10, 3, epochs=10, steps_per_epoch=7)
    ctx.total_steps = 30  # max_steps = 30 cuts the run to ceil(30 / 7) = 5 epochs
    ctx.epoch = 4
    assert hook.alpha(ctx) == pytest.approx(0.8)


def test_progressive_targets_and_soft_cross_entropy():
    labels = F.one_hot(torch.tensor([2, 0]), 3).float()
    past = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    assert torch.equal(progressive_targets(labels, past, 0.0), labels)
    assert torch.equal(progressive_targets(labels, past, 1.0), past)
    mixed = progressive_targets(labels, past, 0.25)
    torch.testing.assert_close(mixed, 0.75 * labels + 0.25 * past)
    logits = torch.randn(2, 3)
    torch.testing.assert_close(soft_cross_entropy(logits, labels), F.cross_entropy(logits, torch.tensor([2, 0])))
    torch.testing.assert_close(soft_cross_entropy(logits, mixed), F.cross_entropy(logits, mixed))


# -- calibration and ranking ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, classes, seed", [(500, 10, 0), (97, 3, 1), (2000, 100, 2)])
def test_ece_and_aurc_equal_the_reference_metric(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[: n // 2] = logits[: n // 2].argmax(1)  # about half right, so both terms matter
    probs = F.softmax(logits, -1)
    ece, value, excess = reference_ece_aurc(probs.numpy(), labels.numpy(), bin_size=0.1)
    assert 100 * expected_calibration_error(probs, labels, bins=10) == pytest.approx(ece, rel=1e-9, abs=1e-9)
    ours = aurc(probs, labels)
    assert 1000 * ours[0] == pytest.approx(value, rel=1e-9)
    assert 1000 * ours[1] == pytest.approx(excess, rel=1e-9, abs=1e-9)


def test_ece_hand_cases():
    labels = torch.tensor([0, 0, 1, 1])
    # all confident at 0.9, 3 of 4 right: one bin, |0.75 - 0.9| = 0.15
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.15)
    # confidence 0.7 right and wrong, confidence 1 right: bins (0.6, 0.7] and (0.9, 1] -> (2|0.5-0.7| + 0) / 3
    probs = torch.tensor([[0.7, 0.3], [0.3, 0.7], [1.0, 0.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0]), bins=10) == pytest.approx(0.4 / 3)
    # a confidence on an edge belongs to the bin it closes: 0.5 with 2 bins is in (0, 0.5], not (0.5, 1]
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.8, 0.1, 0.1]])  # the first right, the second wrong
    assert expected_calibration_error(probs, torch.tensor([0, 1]), bins=2) == pytest.approx((0.5 + 0.8) / 2)


def test_aurc_hand_cases():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    perfect = torch.tensor([0, 0, 0, 1])  # the least confident is the only error: the best ranking
    value, excess = aurc(probs, perfect)
    assert value == pytest.approx((0 + 0 + 0 + 1 / 4) / 4) and excess == pytest.approx(0.0, abs=1e-12)
    worst = torch.tensor([1, 0, 0, 0])  # the most confident is wrong
    assert aurc(probs, worst)[0] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    scores = calibration_scores(torch.log(probs), perfect)
    assert set(scores) == {"ece", "aurc", "e_aurc"}


# -- the hook's side: eval-mode prediction, several processes, state ----------------------------------------------------
def test_recording_leaves_batch_norm_statistics_and_the_global_rng_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x = torch.randn(5, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    probs = current_predictions(model, x, _ctx(5, 3))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))


class _OneOfTwo:
    """Accelerate's pad_across_processes and gather as process ``rank`` of two sees them (slices in rank order)."""

    num_processes = 2

    def __init__(self, slices, rank):
        self.slices, self.rank = slices, rank

    def pad_across_processes(self, tensor, dim=0, pad_index=0):
        longest = max(len(i) for i, _ in self.slices)
        return torch.cat([tensor, tensor.new_full((longest - len(tensor), *tensor.shape[1:]), pad_index)])

    def gather(self, pair):
        parts = [
            pair if r == self.rank else (self.pad_across_processes(i, pad_index=-1), self.pad_across_processes(p))
            for r, (i, p) in enumerate(self.slices)
        ]
        return torch.cat([i for i, _ in parts]), torch.cat([p for _, p in parts])


def test_two_processes_end_with_the_single_process_table():
    model, n, classes = _model(classes=3), 12, 3
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    index = torch.tensor([4, 0, 9, 2, 11, 5, 7])
    single = PsKd(PsKdConfig())
    single.continual_step({"x": x, "y": y, "index": index}, model, _ctx(n, classes))
    cut = [slice(0, 4), slice(4, 7)]  # uneven shares
    probs = [current_predictions(model, x[c], _ctx(n, classes)) for c in cut]
    slices = [(index[c], p) for c, p in zip(cut, probs)]
    for rank in (0, 1):
        hook = PsKd(PsKdConfig())
        ctx = _ctx(n, classes, accelerator=_OneOfTwo(slices, rank))
        c = cut[rank]
        hook.continual_step({"x": x[c], "y": y[c], "index": index[c]}, model, ctx)
        assert torch.equal(hook.table.written_in, single.table.written_in)
        torch.testing.assert_close(hook.table.probs, single.table.probs, rtol=0, atol=1e-7)
    assert torch.equal(first_occurrence(torch.tensor([3, 1, 3, 2, 1])), torch.tensor([0, 1, 3]))
    i, p = gather_global_batch(
        _OneOfTwo([(index[:2], probs[0][:2]), (index[:0], probs[1][:0])], 0), index[:2], probs[0][:2]
    )
    assert torch.equal(i, index[:2]) and torch.equal(p, probs[0][:2])


def test_state_round_trips_and_alpha_zero_is_a_no_op():
    hook, ctx, model = PsKd(PsKdConfig()), _ctx(10, 3, epochs=2), _model(classes=3)
    batch = {"x": torch.randn(3, 6), "y": torch.tensor([0, 1, 2]), "index": torch.tensor([0, 4, 9])}
    hook.continual_step(batch, model, ctx)
    state = checkpoint_round_trip(hook.state_dict())
    restored = PsKd(PsKdConfig())
    restored.load_state_dict(state)
    ctx.epoch = 1
    assert torch.equal(
        restored.continual_step(dict(batch), model, ctx)["target"],
        hook.continual_step(dict(batch), model, ctx)["target"],
    )
    off = PsKd(PsKdConfig(alpha_T=0.0))
    assert off.continual_step(batch, model, ctx) is None and off.table is None
    assert PsKd(PsKdConfig()).state_dict() == {"table": None}


def test_config_ranges():
    with pytest.raises(ValueError):
        PsKdConfig(alpha_T=1.5)
    with pytest.raises(ValueError):
        PsKdConfig(ece_bins=0)
    assert PsKdConfig().alpha_T == 0.8 and PsKdConfig().ece_bins == 15


# -- plans ----------------------------------------------------------------------------------------------------
_PLAN = """
[run]
name = "t"
seeds = [3]
epochs = 2
batch_size = 64
save_model = true

[task]
name = "digits"

[model]
name = "mlp"
depth = 1
width = 32

[optimize]
use = "sgd"
lr = 0.1
momentum = 0.9
"""


def _weights(directory: Path):
    (path,) = directory.glob("runs/**/model.safetensors")
    return paperkit.read_weights(path)


def test_alpha_zero_trains_exactly_like_plain_cross_entropy(run_plan, tmp_path):
    plain, _ = run_plan(_PLAN)
    off, _ = run_plan(_PLAN + '[transform]\nuse = "ps-kd"\nalpha_T = 0.0\n')
    assert plain["final"]["classification/accuracy"] == off["final"]["classification/accuracy"]
    a, b = _weights(tmp_path / "plan0"), _weights(tmp_path / "plan1")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert 0.0 <= off["final"]["ps-kd/ece"] <= 1.0


def test_ps_kd_must_come_before_mixup(run_plan):
    from paperkit import PlanError

    wrong = _PLAN + '[[transform]]\nuse = "mixup"\n[[transform]]\nuse = "ps-kd"\n'
    with pytest.raises(PlanError, match="must run before 'mixup'"):
        run_plan(wrong)
    right = _PLAN + '[[transform]]\nuse = "ps-kd"\n[[transform]]\nuse = "mixup"\n'
    results, _ = run_plan(right)
    assert results["status"] == "completed"


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "ps-kd" in manifest["methods"]
    assert 0.0 <= results["final"]["classification/accuracy"] <= 1.0
    assert 0.0 <= results["final"]["ps-kd/ece"] <= 1.0 and results["final"]["ps-kd/aurc"] >= 0.0


def test_record():
    assert method.section == "transform" and method.batch_keys == ("target",)
    assert {c.id for c in method.claims} == {"accuracy", "calibration"}
