"""Task kinds (class, multi-label, regression), the core's [task] options, the new embedded tasks and model options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from paperkit import PlanError
from paperkit.building import build_task
from paperkit.metrics import stream_metrics
from paperkit.plan import build_plan
from paperkit.scores import multilabel_scores, regression_scores
from paperkit.testing import builtin_registry, run_plan_text

RUN = '[run]\nname = "k"\nseeds = [0]\nepochs = {epochs}\nbatch_size = 64\nlog_every = 50\nsave_model = false\n'


def _plan(tmp_path: Path, text: str):
    import tomli

    path = tmp_path / "plan.toml"
    path.write_text(text, encoding="utf-8")
    return build_plan(tomli.loads(text), path, registry=builtin_registry())


# -- scores ----------------------------------------------------------------------------------
def test_multilabel_and_regression_scores_are_scikit_learns() -> None:
    from sklearn.metrics import average_precision_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 6, generator=g, dtype=torch.float64)
    targets = (torch.rand(200, 6, generator=g) < 0.3).double()
    targets[:, 5] = 0  # a label with no positive is left out of the mean, as scikit-learn warns and skips
    ours = multilabel_scores(logits, targets)
    kept = [j for j in range(6) if targets[:, j].any()]
    expected = sum(average_precision_score(targets[:, j], logits[:, j]) for j in kept) / len(kept)
    assert math.isclose(ours["mAP"], expected, rel_tol=1e-12)
    assert math.isclose(ours["f1"], f1_score(targets, (logits > 0).double(), average="micro"), rel_tol=1e-12)
    prediction, y = torch.randn(100, 2, generator=g, dtype=torch.float64), torch.randn(100, 2, generator=g, dtype=torch.float64)
    scores = regression_scores(prediction, y)
    assert math.isclose(scores["r2"], r2_score(y, prediction), rel_tol=1e-12)
    assert math.isclose(scores["mse"], mean_squared_error(y, prediction), rel_tol=1e-12)
    assert math.isclose(scores["mae"], mean_absolute_error(y, prediction), rel_tol=1e-12)


def test_stream_metrics_respect_the_direction_of_the_metric() -> None:
    R = [[1.0, 5.0], [3.0, 2.0]]  # a loss: experience 0's rose from 1 to 3 after learning experience 1
    lower = stream_metrics(R, [4.0, 6.0], "lower")
    assert lower["forgetting"] == 2.0 and lower["backward_transfer"] == -2.0  # worse, in the metric's units
    assert lower["forward_transfer"] == 1.0 and lower["average_accuracy"] == 2.5  # 5 < 6: the unseen task got better
    higher = stream_metrics(R, [4.0, 6.0], "higher")
    assert higher["forgetting"] == -2.0 and higher["backward_transfer"] == 2.0  # the same change read as a gain


# -- regression and multi-label end to end ----------------------------------------------------
def test_a_regression_plan_trains_with_mse_and_reports_r2(tmp_path: Path) -> None:
    text = RUN.format(epochs=30) + '[task]\nname = "regression"\n[model]\nname = "mlp"\ndepth = 1\nwidth = 32\n[optimize]\nuse = "adamw"\nlr = 0.01\n'
    plan = _plan(tmp_path, text)
    assert [u.key for u in plan.methods if u.implicit] == ["mse", "regression"]
    results, _ = run_plan_text(text, tmp_path / "run", builtin_registry())
    assert results["headline"] == {"metric": "regression/r2", "direction": "higher"}
    assert 0.3 < results["final"]["regression/r2"] < 0.7  # diabetes: linear models explain about half the variance
    assert results["final"]["regression/mse"] < 1.0  # below the mean predictor's (standardized target)


def test_a_multilabel_plan_reports_map_and_beats_chance(tmp_path: Path) -> None:
    text = RUN.format(epochs=10) + '[task]\nname = "multi-label"\n[model]\nname = "mlp"\ndepth = 1\nwidth = 64\n[optimize]\nuse = "adamw"\nlr = 0.003\n'
    results, _ = run_plan_text(text, tmp_path / "run", builtin_registry())
    final = results["final"]
    assert final["multi-label/mAP"] > 0.6 and 0.0 < final["multi-label/f1"] <= 1.0
    assert "binary-cross-entropy" in (tmp_path / "run" / "plan.toml").read_text() or results["status"] == "completed"


def test_the_long_tailed_multilabel_training_set_is_long_tailed(tmp_path: Path) -> None:
    counts = {}
    for ratio in (1, 20):
        plan = _plan(tmp_path, RUN.format(epochs=1) + f'[task]\nname = "multi-label"\nimbalance_ratio = {ratio}\n'
                     '[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n')
        counts[ratio] = torch.sort(build_task(plan).extras["train_label_counts"], descending=True).values
    skew = lambda c: (c[0] / c[-1]).item()  # noqa: E731
    assert skew(counts[20]) > 3 * skew(counts[1])


# -- long-tailed digits ----------------------------------------------------------------------
def test_long_tail_digits_follow_the_exponential_profile_with_a_balanced_test_set(tmp_path: Path) -> None:
    plan = _plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "long-tail-digits"\nimbalance_ratio = 10\n'
                 '[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n')
    task = build_task(plan)
    (exp,) = task.experiences
    train = torch.bincount(exp.train.y, minlength=10)
    assert train[0] / train[9] == pytest.approx(10, rel=0.1)
    assert all(train[c] >= train[c + 1] for c in range(9))
    for c in range(10):  # n_c = n_max * rho^(-c/9), rounded down
        assert train[c] == max(1, int(train[0].item() * 10 ** (-c / 9)))
    test = torch.bincount(exp.test.y, minlength=10)
    assert len(set(test.tolist())) == 1
    assert task.extras["class_groups"] == {"head": [0, 1, 2], "medium": [3, 4, 5, 6], "tail": [7, 8, 9]}


def test_long_tail_runs_report_head_medium_and_tail_accuracy(tmp_path: Path) -> None:
    text = RUN.format(epochs=3) + '[task]\nname = "long-tail-digits"\n[model]\nname = "mlp"\ndepth = 1\nwidth = 32\n[optimize]\nuse = "adamw"\n'
    results, _ = run_plan_text(text, tmp_path / "run", builtin_registry())
    final = results["final"]
    assert {"classification/head_accuracy", "classification/medium_accuracy", "classification/tail_accuracy"} <= set(final)
    assert final["classification/head_accuracy"] > final["classification/tail_accuracy"]


# -- the core's [task] options ---------------------------------------------------------------
MODULAR = '[task]\nname = "modular-arithmetic"\nmodulus = 13\n{extra}\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'


def test_label_noise_applies_to_any_class_task_and_keeps_test_labels_clean(tmp_path: Path) -> None:
    clean = build_task(_plan(tmp_path, RUN.format(epochs=1) + MODULAR.format(extra="")))
    plan = _plan(tmp_path, RUN.format(epochs=1) + MODULAR.format(extra='label_noise = 0.4\nlabel_noise_type = "pair"'))
    noisy = build_task(plan)
    a, b = clean.experiences[0], noisy.experiences[0]
    flipped = a.train.y != b.train.y
    assert 0.3 < flipped.float().mean().item() < 0.5
    assert torch.equal(b.train.y[flipped], (a.train.y[flipped] + 1) % 13)  # pair flipping: c -> c + 1
    assert torch.equal(a.test.y, b.test.y) and torch.equal(noisy.extras["clean_labels"][0], a.train.y)
    assert plan.resolved()["task"]["label_noise"] == 0.4


def test_task_options_are_refused_where_they_cannot_apply(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"\[task\] label_noise_type: asymmetric label noise needs the task's confusable"):
        build_task(_plan(tmp_path, RUN.format(epochs=1) + MODULAR.format(extra='label_noise = 0.2\nlabel_noise_type = "asymmetric"')))
    with pytest.raises(PlanError, match=r"\[task\] label_noise: label noise needs a class task; 'regression' is a regression task"):
        _plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "regression"\nlabel_noise = 0.1\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n')
    with pytest.raises(PlanError, match=r"\[task\] validation_fraction"):
        _plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "digits"\nvalidation_fraction = 1.5\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n')


def test_asymmetric_noise_uses_the_tasks_pairs(tmp_path: Path) -> None:
    digits = '[task]\nname = "digits"\nlabel_noise = 0.5\nlabel_noise_type = "asymmetric"\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'
    task = build_task(_plan(tmp_path, RUN.format(epochs=1) + digits))
    clean, noisy = task.extras["clean_labels"][0], task.experiences[0].train.y
    for src, dst in {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}.items():
        assert set(noisy[(clean == src) & (noisy != clean)].tolist()) <= {dst}
    assert torch.equal(noisy[clean == 0], clean[clean == 0])


def test_a_validation_split_is_held_out_of_every_experience_stratified(tmp_path: Path) -> None:
    text = RUN.format(epochs=1) + '[task]\nname = "split-digits"\nexperiences = 2\nvalidation_fraction = 0.2\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'
    task = build_task(_plan(tmp_path, text))
    plain = build_task(_plan(tmp_path, text.replace("validation_fraction = 0.2\n", "")))
    for e, p in zip(task.experiences, plain.experiences):
        assert e.valid is not None and len(e.valid) + len(e.train) == len(p.train)
        assert not set(e.valid.index.tolist()) & set(e.train.index.tolist())
        share = torch.bincount(e.valid.y, minlength=10)[list(e.classes)].float() / torch.bincount(p.train.y, minlength=10)[list(e.classes)]
        assert ((share - 0.2).abs() < 0.03).all()  # stratified: each class gives the same share
    results, _ = run_plan_text(text, tmp_path / "run", builtin_registry())
    assert results["status"] == "completed"


def test_methods_are_refused_on_kinds_they_do_not_support(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"\[transform\] use: method 'mixup' works on class tasks, and the task is a regression task"):
        _plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "regression"\n[model]\nname = "mlp"\n[optimize]\nuse = "sgd"\n[transform]\nuse = "mixup"\n')
    with pytest.raises(PlanError, match="method 'mse' works on regression tasks, and the task is a class task"):
        _plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "digits"\n[model]\nname = "mlp"\n[optimize]\nuse = "sgd"\n[regularize]\nuse = "mse"\n')


def test_a_task_factory_returning_something_else_is_one_line(tmp_path: Path) -> None:
    text = RUN.format(epochs=1) + '[task]\nname = "tests.test_task_kinds:not_a_task"\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'
    with pytest.raises(PlanError, match="the task factory returned dict, not a paperkit Task"):
        build_task(_plan(tmp_path, text))


def not_a_task() -> dict:
    return {}


# -- model options -----------------------------------------------------------------------------
def _mlp(**options: object):
    from paperkit.models import MLPConfig
    from paperkit.models.mlp import MLP

    return MLP(8, 3, MLPConfig(depth=2, width=6, **options))


def test_maxout_units_take_the_max_of_their_pieces() -> None:
    model = _mlp(activation="maxout", maxout_pieces=3)
    assert model.blocks[0].linear1.weight.shape == (18, 6) and model.stem[0].weight.shape == (18, 8)
    x = torch.randn(5, 8)
    pre = model.stem[0](x)
    assert torch.equal(model.stem(x), pre.reshape(5, 6, 3).amax(-1))
    assert model(x).shape == (5, 3)


def test_sine_activation_and_ghost_batch_norm() -> None:
    model = _mlp(activation="sine", sine_w0=30.0)
    x = torch.randn(4, 8)
    assert torch.allclose(model.stem(x), torch.sin(30.0 * model.stem[0](x)))
    from paperkit.models.mlp import GhostBatchNorm1d

    ghost, plain = GhostBatchNorm1d(3, virtual=4), torch.nn.BatchNorm1d(3)
    h = torch.randn(8, 3)
    expected = torch.cat([plain(h[:4]), plain(h[4:])])  # each ghost batch normalized on its own
    assert torch.allclose(ghost(h), expected, atol=1e-6)
    assert torch.allclose(ghost.running_mean, plain.running_mean) and torch.allclose(ghost.running_var, plain.running_var)


# -- shifted, multi-environment and sequence data ---------------------------------------------------
def _task(tmp_path: Path, table: str):
    return build_task(_plan(tmp_path, RUN.format(epochs=1) + table + '[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'))


def test_shifted_digits_report_every_shifted_test_set_beside_the_clean_one(tmp_path: Path) -> None:
    task = _task(tmp_path, '[task]\nname = "shifted-digits"\nshifts = ["noise", "blur"]\n')
    (exp,) = task.experiences
    assert set(exp.ood) == {"noise", "blur"} and all(torch.equal(d.y, exp.test.y) for d in exp.ood.values())
    assert not torch.equal(exp.ood["noise"].x, exp.test.x)
    from paperkit.tasks.digits import blur

    image = torch.zeros(1, 64)
    image[0, 27] = 1.0  # one lit pixel spreads to its 3x3 neighbourhood with weights (1 2 1)^T (1 2 1) / 16
    assert blur(image).reshape(8, 8)[2:5, 2:5].mul(16).tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    text = RUN.format(epochs=3) + '[task]\nname = "shifted-digits"\n[model]\nname = "mlp"\ndepth = 1\nwidth = 32\n[optimize]\nuse = "adamw"\n'
    final = run_plan_text(text, tmp_path / "run", builtin_registry())[0]["final"]
    for shift in ("noise", "blur", "noise+blur"):
        assert final[f"ood:{shift}/classification/accuracy"] < final["classification/accuracy"]


def test_colored_digits_colour_predicts_the_label_in_training_environments_only(tmp_path: Path) -> None:
    task = _task(tmp_path, '[task]\nname = "colored-digits"\n')
    (exp,) = task.experiences
    colour = lambda x: (x.reshape(len(x), 2, 64).sum(-1)[:, 1] > 0).long()  # noqa: E731 - the lit channel
    for e, flip in enumerate((0.1, 0.2)):
        members = exp.train.extras["env"] == e
        disagree = (colour(exp.train.x[members]) != exp.train.y[members]).float().mean().item()
        assert abs(disagree - flip) < 0.05
    assert abs((colour(exp.ood["reversed"].x) != exp.ood["reversed"].y).float().mean().item() - 0.9) < 0.05
    digits = build_task(_plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "digits"\nstandardize = false\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'))
    shape_label = (digits.experiences[0].train.y >= 5).long()
    assert abs((shape_label != exp.train.y).float().mean().item() - 0.25) < 0.04  # the label noise of the recipe
    batch = next(iter(__import__("paperkit.engine", fromlist=["TrainBatches"]).TrainBatches(
        exp.train, _plan(tmp_path, RUN.format(epochs=1) + '[task]\nname = "colored-digits"\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'),
        0, 0, __import__("accelerate").Accelerator(cpu=True)).steps(0, 1)))[1]
    assert "env" in batch and len(batch["env"]) == len(batch["y"])  # the environment reaches every batch


def test_sequential_digits_are_64_steps_of_one_pixel(tmp_path: Path) -> None:
    plain = _task(tmp_path, '[task]\nname = "digits"\n').experiences[0]
    seq = _task(tmp_path, '[task]\nname = "sequential-digits"\n').experiences[0]
    assert seq.train.x.shape[1:] == (64, 1) and torch.equal(seq.train.x[..., 0], plain.train.x)
    permuted = _task(tmp_path, '[task]\nname = "sequential-digits"\npermute = true\n').experiences[0]
    assert torch.equal(torch.sort(permuted.train.x[0, :, 0]).values, torch.sort(plain.train.x[0]).values)
    assert not torch.equal(permuted.train.x, seq.train.x)


def test_mnist1d_comes_from_the_offline_generator_cached_and_without_touching_global_rngs(tmp_path: Path, monkeypatch) -> None:
    import random

    import numpy as np

    from paperkit.tasks.mnist1d import generate

    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path / "cache"))
    np.random.seed(7)
    random.seed(7)
    before = (np.random.get_state()[1].copy(), random.getstate())
    data = generate(500, 3, 0.02, 0.25, 48, 0.75)
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    assert data["x"].shape == (400, 40) and sorted(set(data["y"].tolist())) == list(range(10))
    assert list((tmp_path / "cache").glob("mnist1d-*.npz"))
    again = generate(500, 3, 0.02, 0.25, 48, 0.75)  # read back from the cache
    assert np.array_equal(again["x"], data["x"]) and np.array_equal(again["y_test"], data["y_test"])


def test_split_mnist1d_is_a_class_incremental_stream(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path / "cache"))
    task = _task(tmp_path, '[task]\nname = "split-mnist1d"\nsamples = 500\nexperiences = 5\n')
    assert [e.classes for e in task.experiences] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for e in task.experiences:
        assert set(e.train.y.tolist()) == set(e.classes) and set(e.test.y.tolist()) == set(e.classes)


# -- next-token prediction ---------------------------------------------------------------------
LM = '[task]\nname = "next-token"\n{extra}\n[model]\nname = "causal-transformer"\n{model}\n[optimize]\nuse = "adamw"\nlr = 0.003\n'


def test_next_token_sequences_predict_the_stream_shifted_by_one(tmp_path: Path) -> None:
    task = _task(tmp_path, '[task]\nname = "next-token"\ntokens = 3300\nseq_len = 10\n')
    (exp,) = task.experiences
    assert exp.train.x.shape[1] == 10 and torch.equal(exp.train.x[:, 1:], exp.train.y[:, :-1])
    vocabulary = task.extras["vocabulary"]
    words = [vocabulary[i] for i in exp.train.x[0].tolist()]
    assert all(w in vocabulary for w in words) and len(exp.test) == 30  # the last 10% of 300 sequences
    again = _task(tmp_path, '[task]\nname = "next-token"\ntokens = 3300\nseq_len = 10\n')
    assert torch.equal(again.experiences[0].train.x, exp.train.x)  # the grammar is seeded
    chars = _task(tmp_path, '[task]\nname = "next-token"\nsource = "stdlib"\ntokenization = "char"\ntokens = 5000\n')
    text = "".join(chars.extras["vocabulary"][i] for i in chars.experiences[0].train.x[0].tolist())
    assert "json" in chars.extras["modules"] and text.isprintable() or "\n" in text


def test_the_causal_transformer_never_looks_ahead(tmp_path: Path) -> None:
    from paperkit.models import CausalTransformerConfig
    from paperkit.models.causal import CausalTransformer
    from paperkit.tasks.base import TaskInfo

    info = TaskInfo(input_dim=8, num_classes=20, input_kind="tokens", vocab_size=20, seq_len=8)
    for qk_norm in (False, True):
        torch.manual_seed(0)
        model = CausalTransformer(info, CausalTransformerConfig(d_model=16, heads=2, layers=2, qk_norm=qk_norm)).eval()
        x = torch.randint(0, 20, (3, 8))
        changed = x.clone()
        changed[:, 5:] = (changed[:, 5:] + 1) % 20
        a, b = model(x), model(changed)
        assert a.shape == (3, 8, 20)
        assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6) and not torch.allclose(a[:, 5:], b[:, 5:])
        assert len(model.hidden_states(x)) == 3 and isinstance(model.blocks[0].attn.q_norm, torch.nn.LayerNorm) == qk_norm


def test_a_next_token_plan_learns_and_reports_perplexity(tmp_path: Path) -> None:
    text = RUN.format(epochs=4) + LM.format(extra="tokens = 20000", model="d_model = 32\nlayers = 1")
    plan = _plan(tmp_path, text)
    assert [u.key for u in plan.methods if u.implicit] == ["cross-entropy", "language-model"]
    results, _ = run_plan_text(text, tmp_path / "run", builtin_registry())
    final, initial = results["final"], results["initial"]
    assert results["headline"] == {"metric": "language-model/loss", "direction": "lower"}
    assert final["language-model/loss"] < 0.8 * initial["language-model/loss"]
    assert math.isclose(final["language-model/perplexity"], math.exp(final["language-model/loss"]), rel_tol=1e-5)


def test_image_fitting_maps_coordinates_to_the_photographs_colours(tmp_path: Path) -> None:
    task = _task(tmp_path, '[task]\nname = "image-fitting"\nresolution = 16\n')
    (exp,) = task.experiences
    h, w = task.extras["shape"]
    assert (h, w) == (16, 24) and exp.train.x.shape == (h * w, 2) and exp.train.y.shape == (h * w, 3)
    assert exp.train.x.min() == -1 and exp.train.x.max() == 1 and exp.train.y.abs().max() <= 1
    assert torch.equal(exp.train.x, exp.test.x)  # "fit": the signal itself is the test
    split = _task(tmp_path, '[task]\nname = "image-fitting"\nresolution = 16\nsplit = "interpolate"\n').experiences[0]
    assert len(split.train) == 8 * 12 and len(split.train) + len(split.test) == h * w
    assert not set(map(tuple, split.train.x.tolist())) & set(map(tuple, split.test.x.tolist()))


def test_partial_labels_are_masked_and_the_loss_ignores_unobserved_entries(tmp_path: Path) -> None:
    from paperkit.builtin.basic import BinaryCrossEntropy
    from paperkit.context import Outputs

    task = _task(tmp_path, '[task]\nname = "multi-label"\nobserved_fraction = 0.5\n')
    train = task.experiences[0].train
    mask = train.extras["label_mask"]
    assert abs(mask.mean().item() - 0.5) < 0.02 and torch.equal(train.y * mask, train.y)
    logits, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float64)
    m = torch.tensor([[1.0, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.float64)
    loss = BinaryCrossEntropy(None).loss({"y": y, "label_mask": m}, Outputs(logits))
    entries = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert torch.allclose(loss, ((entries * m).sum(-1) / m.sum(-1)).mean())
    changed = y.clone()
    changed[m == 0] = 1 - changed[m == 0]  # what sits under the mask does not matter
    assert torch.allclose(BinaryCrossEntropy(None).loss({"y": changed, "label_mask": m}, Outputs(logits)), loss)


def test_clean_labels_travel_with_their_samples_through_a_validation_split(tmp_path: Path) -> None:
    task = _task(tmp_path, '[task]\nname = "digits"\nlabel_noise = 0.3\nvalidation_fraction = 0.2\n')
    exp = task.experiences[0]
    for part in (exp.train, exp.valid):
        assert part is not None and "clean_y" in part.extras
        flipped = part.extras["clean_y"] != part.y
        assert 0.2 < flipped.float().mean().item() < 0.4


def test_the_square_activation() -> None:
    model = _mlp(activation="square")
    x = torch.randn(3, 8)
    assert torch.allclose(model.stem(x), model.stem[0](x) ** 2)
