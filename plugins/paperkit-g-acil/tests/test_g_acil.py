"""G-ACIL: the recursive classifier equals the joint ridge solution (also when classes
reappear, generalized CIL), the hooks keep that property through a stream, and an end-to-end run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_g_acil import GACILConfig
from paperkit_g_acil.functional import (
    UNSEEN_LOGIT,
    AnalyticHead,
    RecursiveClassifier,
    expand,
    expansion_weight,
    one_hot,
    ridge_solution,
    rls_init,
    rls_update,
)
from paperkit_g_acil.hooks import GACIL

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_recursion_equals_joint_ridge_after_every_batch_with_reappearing_classes():
    g = torch.Generator().manual_seed(0)
    dim, classes, gamma = 40, 6, 0.1
    R, W = rls_init(dim, classes, gamma)
    seen_X, seen_Y = [], []
    # generalized CIL: classes come, go and come back, batches of uneven size
    for labels in ([0, 1], [2], [0, 3, 1], [4, 2], [5, 0, 1, 2, 3, 4], [3]):
        n = int(torch.randint(3, 30, (1,), generator=g))
        X = torch.relu(torch.randn(n, dim, generator=g, dtype=torch.float64))
        y = torch.tensor(labels)[torch.randint(0, len(labels), (n,), generator=g)]
        Y = one_hot(y, classes)
        R, W = rls_update(R, W, X, Y)
        seen_X.append(X)
        seen_Y.append(Y)
        Xa, Ya = torch.cat(seen_X), torch.cat(seen_Y)
        _close(W, ridge_solution(Xa, Ya, gamma))
        _close(R, torch.linalg.inv(Xa.t() @ Xa + gamma * torch.eye(dim, dtype=torch.float64)))


def test_order_and_batching_do_not_matter():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(50, 16, generator=g, dtype=torch.float64)
    Y = one_hot(torch.randint(0, 4, (50,), generator=g), 4)
    one = rls_update(*rls_init(16, 4, 0.5), X, Y)[1]
    R, W = rls_init(16, 4, 0.5)
    perm = torch.randperm(50, generator=g)
    for chunk in perm.split(7):
        R, W = rls_update(R, W, X[chunk], Y[chunk])
    _close(W, one)


def test_expansion_matches_linear_default_init_range_and_is_seeded():
    a = expansion_weight(128, 4096, torch.Generator().manual_seed(3))
    b = expansion_weight(128, 4096, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float64
    bound = 1 / 128 ** 0.5
    assert a.abs().max() <= bound and a.abs().max() > 0.99 * bound
    assert abs(a.mean().item()) < 1e-3
    f = torch.randn(5, 128)
    assert (expand(f, a) >= 0).all() and expand(f, a).shape == (5, 4096)


def test_head_is_linear_until_loaded_then_analytic_with_unseen_classes_masked():
    g = torch.Generator().manual_seed(2)
    linear = torch.nn.Linear(8, 5)
    head = AnalyticHead(linear, expansion_weight(8, 32, g))
    f = torch.randn(3, 8, generator=g)
    torch.testing.assert_close(head(f), linear(f))  # before the first fit: the linear head
    clf = RecursiveClassifier(32, 5, 0.1)
    clf.fit(head.expand(torch.randn(20, 8, generator=g)), torch.tensor([0, 2] * 10))
    head.load(clf.W, clf.seen)
    logits = head(f)
    assert logits.dtype == torch.float32
    assert (logits[:, [1, 3, 4]] == UNSEEN_LOGIT).all()
    assert (logits[:, [0, 2]] > UNSEEN_LOGIT).all()
    torch.testing.assert_close(logits[:, [0, 2]], (expand(f, head.expansion) @ clf.W)[:, [0, 2]].float())
    assert sorted(n for n, _ in head.named_parameters()) == ["linear.bias", "linear.weight"]


class _Net(torch.nn.Module):
    """A Classifier-shaped model: features(x) then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh())
        self.head = torch.nn.Linear(12, 5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _experience(index: int, x: torch.Tensor, y: torch.Tensor) -> SimpleNamespace:
    from paperkit import IndexedDataset

    return SimpleNamespace(index=index, train=IndexedDataset(x, y))


def test_hooks_keep_the_joint_solution_through_a_generalized_stream():
    torch.manual_seed(0)
    net = _Net()
    ctx = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), seed=7, device=torch.device("cpu"))
    impl = GACIL(GACILConfig(expansion=64, gamma=0.1, fit_batch=9))
    impl.adapt(net, ctx)
    g = torch.Generator().manual_seed(5)
    stream = [[0, 1], [2, 0], [3, 1, 4], [0]]  # class 0 reappears three times
    xs, ys = [], []
    assert impl.before_experience() is None  # the first experience trains by backpropagation
    for index, labels in enumerate(stream):
        x = torch.randn(25, 6, generator=g)
        y = torch.tensor(labels)[torch.randint(0, len(labels), (25,), generator=g)]
        if index:
            assert impl.before_experience() is False
        impl.after_experience(net, _experience(index, x, y), ctx)
        xs.append(x)
        ys.append(y)
        assert isinstance(net.head, AnalyticHead)
        with torch.no_grad():
            X = expand(net.features(torch.cat(xs)), net.head.expansion)
        _close(net.head.analytic_weight, ridge_solution(X, one_hot(torch.cat(ys), 5), 0.1))
        assert net.head.seen.tolist() == [c in set(torch.cat(ys).tolist()) for c in range(5)]
    # the frozen backbone and the analytic head predict through the model's own forward
    logits = net(torch.cat(xs))
    assert logits.shape == (100, 5)
    state = impl.state_dict()
    other = GACIL(GACILConfig(expansion=64, gamma=0.1))
    other.load_state_dict(state)
    _close(other.classifier.W, impl.classifier.W)


def test_rejects_a_model_without_a_linear_head():
    from paperkit import PluginError

    ctx = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), seed=0, device=torch.device("cpu"))
    with pytest.raises(PluginError, match="linear 'head'"):
        GACIL(GACILConfig(expansion=8)).adapt(torch.nn.Linear(3, 2), ctx)


def test_resume_after_a_crash_between_experiences_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    """The head is installed by adapt, so a boundary checkpoint loads back into a fresh model."""

    from paperkit.testing import run_plan_file

    path = tmp_path / "plan.toml"
    path.write_text(EXAMPLE.read_text().replace("epochs = 5", "epochs = 1"))

    def go(output: str, resume: Path | None = None):
        return run_plan_file(path, tmp_path / output, resume=resume)

    reference = go("ref").results
    original = GACIL.after_experience

    def crash(self, model, experience, ctx):
        if experience.index == 3:
            raise KeyboardInterrupt
        return original(self, model, experience, ctx)

    crash.paperkit_impl = original.paperkit_impl
    monkeypatch.setattr(GACIL, "after_experience", crash)
    with pytest.raises(KeyboardInterrupt):
        go("crashed")
    monkeypatch.setattr(GACIL, "after_experience", original)
    (run_dir,) = (tmp_path / "crashed").iterdir()
    resumed = go("crashed", resume=run_dir).results
    for key in ("accuracy_matrix", "average_accuracy", "final", "steps"):
        assert resumed[key] == reference[key]


def test_example_plan_trains_only_the_first_experience_and_keeps_old_classes(run_plan):
    results, _ = run_plan(EXAMPLE.read_text())
    assert results["status"] == "completed"
    R = results["accuracy_matrix"]
    # 5 epochs of ceil(270/32) steps on experience 0, none afterwards
    assert results["steps"] <= 5 * 10
    assert results["average_accuracy"] > 0.8
    assert min(R[-1]) > 0.7  # no experience is forgotten
