"""COMIC's loss against hand-computed values, plain binary cross-entropy, a float64 transcription of the authors'
loss code, the correction's flipping rule, the hook's state, several processes, and an end-to-end run."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from paperkit_comic import ComicConfig, method
from paperkit_comic.functional import (
    candidates_of,
    class_weights,
    comic_loss,
    masked_mean,
    mfm_entries,
    recall,
)
from paperkit_comic.hooks import Comic

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
OFF = {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0, "head_tail": False, "correction": False}


def _batch(b=12, c=6, seed=0, observed=0.6, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    truth = (torch.rand(b, c, generator=g) < 0.35).double()
    mask = (torch.rand(b, c, generator=g) < observed).double()
    counts = torch.randint(1, 400, (c,), generator=g).double()
    return logits, truth * mask, mask, counts


# -- hand-computed values -------------------------------------------------------------------------------------


def test_class_weights_by_hand():
    got = class_weights(torch.tensor([100.0, 10.0, 1.0, 0.0]), 1 / 3)
    expected = [1.0, (1 + math.log(10)) ** (1 / 3), (1 + math.log(100)) ** (1 / 3), (1 + math.log(100)) ** (1 / 3)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))  # a label never seen counts as 1


def test_mfm_entries_by_hand():
    """One positive at z = 0 and one negative at z = 2, weights (1.5, 2), γ+ = 1, γ- = 3, m = 0.05."""
    logits = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    weights = torch.tensor([1.5, 2.0], dtype=torch.float64)
    got = mfm_entries(logits, targets, weights, gamma_pos=1.0, gamma_neg=3.0, clip=0.05)
    p = 1 / (1 + math.exp(-2.0))
    p_m = p - 0.05
    pos = -1.5 * (1 - 0.5) ** 1.0 * math.log(0.5)  # w_c (1 - p)^γ+ log p
    neg = -2.0 * p_m ** (3.0 + 2.0) * math.log(1 - p_m)  # w_c p_m^(γ- + w_c) log(1 - p_m)
    torch.testing.assert_close(got, torch.tensor([[pos, neg]], dtype=torch.float64))


def test_probability_shift_zeroes_easy_negatives():
    """A negative with p <= m has p_m = 0: no loss and no gradient (ASL's hard threshold)."""
    logits = torch.tensor([[-4.0, -2.0]], dtype=torch.float64, requires_grad=True)  # p = 0.018, 0.119
    entries = mfm_entries(logits, torch.zeros(1, 2, dtype=torch.float64), None, 0.0, 0.0, clip=0.05)
    assert entries[0, 0].item() == 0.0 and entries[0, 1].item() > 0
    entries.sum().backward()
    assert logits.grad[0, 0].item() == 0.0 and logits.grad[0, 1].item() > 0


def test_head_tail_term_weighs_rare_labels_more_and_focuses_their_negatives_harder():
    logits = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    weights = class_weights(torch.tensor([500.0, 5.0]), 1 / 3).double()  # head, tail
    entries = mfm_entries(logits, targets, weights)
    plain = mfm_entries(logits, targets, None)
    torch.testing.assert_close(entries[0], plain[0] * weights)  # positives: weight only (γ+ = 0)
    assert entries[0, 1] > entries[0, 0]  # the tail's positive counts more
    # negatives: weight and exponent γ- + w_c; p_m < 1 so a larger exponent shrinks the loss
    torch.testing.assert_close(entries[1], plain[1] * weights * (torch.sigmoid(logits[1]) - 0.05) ** weights)


# -- against plain binary cross-entropy ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (16, 10), (1, 7)])
def test_modifiers_off_is_binary_cross_entropy(shape):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * 4
    targets = (torch.rand(*shape, generator=g) < 0.4).double()
    soft = torch.rand(*shape, generator=g, dtype=torch.float64)
    for t in (targets, soft):
        got = mfm_entries(logits, t, None, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
        torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits, t, reduction="none"))


def test_comic_with_modifiers_off_is_paperkits_binary_cross_entropy_formula():
    """Unobserved ignored: the mean over each sample's observed entries (the built-in loss); as negatives: the plain
    mean over every entry (the paper's BCE baseline)."""
    logits, targets, mask, counts = _batch()
    entries = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    ignore, _ = comic_loss(logits, targets, counts, observed=mask, unobserved="ignore", **OFF)
    torch.testing.assert_close(ignore, (entries * mask).sum(-1) / mask.sum(-1).clamp_min(1.0))
    negative, _ = comic_loss(logits, targets, counts, observed=mask, unobserved="negative", **OFF)
    torch.testing.assert_close(negative, entries.mean(-1))


def test_modifiers_off_trains_exactly_like_the_builtin_loss(run_plan):
    plan = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1")
    off = plan.replace(
        'use = "comic"',
        'use = "comic"\ngamma_neg = 0.0\nclip = 0.0\nhead_tail = false\ncorrection = false\nunobserved = "ignore"',
    )
    builtin = plan.split("[regularize]")[0]
    ours, _ = run_plan(off)
    theirs, _ = run_plan(builtin)
    assert ours["final"] == theirs["final"]


# -- against the authors' code -------------------------------------------------------------------------------


def _authors_focal_sum(x, y, weight, gamma_pos=0.0, gamma_neg=3.0, clip=0.05, eps=1e-8):
    """The authors' MultiGrainedFocalLoss / the corrector's focal sum, re-derived entry by entry in float64."""
    total = 0.0
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            p = 1 / (1 + math.exp(-float(x[b, c])))
            q = min(1 - p + clip, 1.0)
            t, w = float(y[b, c]), float(weight[c])
            ll = w * (t * math.log(max(p, eps)) + (1 - t) * math.log(max(q, eps)))
            pt = t * p + (1 - t) * q
            total += ll * (1 - pt) ** (gamma_pos * t + (gamma_neg + w) * (1 - t))
    return -total


def _authors_weights(distribution, exponent):
    prob = distribution / distribution.sum()
    return (-(prob / prob.max()).log() + 1) ** exponent


def _authors_step(logits, labels, distribution, epoch_distribution, tau=0.7, margin=1.0):
    """PerformanceLoss(logits, labels) + 0.2 * ReflectiveLabelCorrectorLoss(logits, labels) for one batch, as the
    authors' training loop adds them; returns the total and the corrector's updated epoch distribution."""
    performance = _authors_focal_sum(logits, labels, _authors_weights(distribution, 1 / 3))
    shifted = torch.where(labels == 1, logits - margin, logits)
    prediction = torch.sigmoid(shifted)
    average = prediction.mean(0, keepdim=True)
    corrected = torch.where((prediction > tau) & (prediction > average), torch.ones_like(labels), labels)
    epoch_distribution = epoch_distribution + (corrected - labels).sum(0)
    rlc_weight = _authors_weights(epoch_distribution, 1 / 6)
    rlc = _authors_focal_sum(shifted, corrected, rlc_weight) * len(labels) / corrected.sum()
    return performance + 0.2 * rlc, epoch_distribution


def test_matches_a_transcription_of_the_authors_loss_over_two_batches_of_an_epoch():
    """No label mask (the paper's setting: every 0 may be a missing positive); the corrector's label counts grow with
    the labels recalled in the first batch. Ours averages where the authors sum: ours * B * C is theirs."""
    distribution = torch.tensor([900.0, 300.0, 120.0, 40.0, 12.0, 3.0], dtype=torch.float64)
    epoch_distribution = distribution.clone()
    recalled = torch.zeros(6, dtype=torch.float64)
    for seed in (1, 2):
        logits, _, _, _ = _batch(b=10, c=6, seed=seed, observed=1.0, scale=2.5)
        labels = (torch.rand(10, 6, generator=torch.Generator().manual_seed(seed + 10)) < 0.3).double()
        expected, epoch_distribution = _authors_step(logits, labels, distribution, epoch_distribution)
        ours, found = comic_loss(logits, labels, distribution, recalled_so_far=recalled)
        recalled = recalled + found.double()
        assert found.sum() > 0  # the case exercises the correction
        torch.testing.assert_close(
            ours.sum() * labels.shape[1],
            expected.to(torch.float64) if torch.is_tensor(expected) else torch.tensor(expected, dtype=torch.float64),
        )
    torch.testing.assert_close(distribution + recalled, epoch_distribution)


# -- the correction ------------------------------------------------------------------------------------------


def test_correction_flips_only_unobserved_entries_above_the_class_aware_threshold():
    probs = torch.tensor([[0.95, 0.90, 0.75, 0.10], [0.20, 0.80, 0.72, 0.10], [0.10, 0.10, 0.99, 0.10]])
    observed = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 0]])
    mean = probs.mean(0)  # label 2's mean is 0.82: 0.75 and 0.72 exceed tau but not the mean
    hits = recall(probs, candidates_of(torch.zeros(3, 4), observed), 0.7, mean)
    expected = torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(hits, expected)  # (0, 0) is observed (a known negative); (2, 2) observed too
    assert not (hits & observed.bool()).any()


def test_without_a_mask_every_zero_is_a_candidate_and_positives_stay():
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert candidates_of(targets, None).tolist() == [[False, True], [True, True]]


def test_recalled_labels_become_positives_of_the_corrector_term():
    """One unobserved entry scored confidently: the corrector term treats it as a positive of the shifted logits
    with the corrector's weights, scaled by B / (corrected positives)."""
    logits = torch.tensor([[3.0, -1.0], [-2.0, 0.5]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    observed = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    counts = torch.tensor([50.0, 5.0], dtype=torch.float64)
    ours, found = comic_loss(logits, targets, counts, observed=observed)
    assert found.tolist() == [1.0, 0.0]
    focal = {"gamma_pos": 0.0, "gamma_neg": 3.0, "clip": 0.05}
    mfm = mfm_entries(logits, targets, class_weights(counts, 1 / 3).double(), **focal).mean(-1)
    shifted = logits - targets
    corrected = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    rlc_w = class_weights(counts + torch.tensor([1.0, 0.0], dtype=torch.float64), 1 / 6).double()
    rlc = mfm_entries(shifted, corrected, rlc_w, **focal).mean(-1)
    torch.testing.assert_close(ours, mfm + 0.2 * (2 / 2) * rlc)
    without, none = comic_loss(logits, targets, counts, observed=observed, correction=False)
    torch.testing.assert_close(without, mfm)
    assert none.sum() == 0


def test_ignored_unobserved_entries_do_not_enter_the_loss():
    logits = torch.tensor([[3.0, -1.0, 0.2], [-2.0, 0.5, 0.1]], dtype=torch.float64)
    targets = torch.zeros(2, 3, dtype=torch.float64)
    observed = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    moved = logits.clone()
    moved[:, 2] = torch.tensor([-5.0, 7.0])  # the unobserved label 2 of both samples
    counts = torch.tensor([10.0, 10.0, 10.0])
    a, _ = comic_loss(logits, targets, counts, observed=observed, unobserved="ignore", tau=0.99, correction=False)
    b, _ = comic_loss(moved, targets, counts, observed=observed, unobserved="ignore", tau=0.99, correction=False)
    torch.testing.assert_close(a, b)


def test_masked_mean_skips_samples_with_nothing_counted():
    entries = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    counted = torch.tensor([[1, 1], [0, 0]])
    assert masked_mean(entries, counted).tolist() == [2.0, 0.0]


# -- the hook ------------------------------------------------------------------------------------------------


def _ctx(labels, epoch=0, accelerator=None):
    experience = SimpleNamespace(train=SimpleNamespace(y=labels))
    return SimpleNamespace(
        experience=experience,
        experience_index=0,
        epoch=epoch,
        task=SimpleNamespace(extras={}),
        accelerator=accelerator or SimpleNamespace(num_processes=1),
        reevaluating=False,
    )


def test_hook_counts_observed_positives_accumulates_recalls_per_epoch_and_round_trips():
    logits, targets, mask, _ = _batch(b=16, c=5, seed=3, scale=4.0)
    train_labels = (torch.rand(40, 5, generator=torch.Generator().manual_seed(7)) < 0.3).float()
    batch = {"x": torch.zeros(16, 1), "y": targets.float(), "label_mask": mask.float()}
    outputs = SimpleNamespace(logits=logits.float())
    impl = Comic(ComicConfig())
    first = impl.loss(batch=batch, outputs=outputs, ctx=_ctx(train_labels))
    torch.testing.assert_close(impl.counts, train_labels.sum(0))
    once = impl.recalled.clone()
    assert once.sum() > 0
    expected, _ = comic_loss(outputs.logits, batch["y"], train_labels.sum(0), observed=batch["label_mask"])
    torch.testing.assert_close(first, expected.mean())
    impl.loss(batch=batch, outputs=outputs, ctx=_ctx(train_labels))
    torch.testing.assert_close(impl.recalled, 2 * once)
    fresh = Comic(ComicConfig())
    fresh.load_state_dict(impl.state_dict())
    a = impl.loss(batch=batch, outputs=outputs, ctx=_ctx(train_labels))
    b = fresh.loss(batch=batch, outputs=outputs, ctx=_ctx(train_labels))
    assert torch.equal(a, b) and torch.equal(impl.recalled, fresh.recalled)
    impl.loss(batch=batch, outputs=outputs, ctx=_ctx(train_labels, epoch=1))  # a new epoch starts from n_c
    torch.testing.assert_close(impl.recalled, once)


def test_hook_honours_multi_hot_soft_targets_and_weights():
    """The multi-label form of the conformance contract (which one-hot encodes y, see the card): soft targets equal
    to y give the label loss, other targets another; weights w give mean(w * per-sample loss)."""
    logits, targets, mask, _ = _batch(b=8, c=4, seed=5)
    train = (torch.rand(30, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    outputs = SimpleNamespace(logits=logits.float())
    base = {"x": torch.zeros(8, 1), "y": targets.float(), "label_mask": mask.float()}

    def loss(**extra):
        return Comic(ComicConfig()).loss(batch={**base, **extra}, outputs=outputs, ctx=_ctx(train))

    plain = loss()
    torch.testing.assert_close(loss(target=targets.float()), plain)
    assert not torch.allclose(loss(target=torch.full_like(base["y"], 0.5)), plain)
    ones = torch.ones(8)
    torch.testing.assert_close(loss(weight=2 * ones), 2 * plain)
    half = ones.clone()
    half[:4] = 0
    assert not torch.allclose(loss(weight=half), plain)


def test_two_processes_compute_the_single_process_loss():
    """The corrector's batch statistics are summed over processes: two halves, each reduced with the other through
    a real two-party all-reduce, give the per-sample losses of the whole batch."""
    logits, targets, mask, counts = _batch(b=14, c=5, seed=11, scale=4.0)
    whole, found = comic_loss(logits, targets, counts, observed=mask)
    assert found.sum() > 0
    parts = list(zip(logits.tensor_split(2), targets.tensor_split(2), mask.tensor_split(2)))
    barrier, slots, results = threading.Barrier(2), [None, None], [None, None]

    def run(rank):
        def reduce(tensor):
            slots[rank] = tensor
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total

        z, y, m = parts[rank]
        results[rank] = comic_loss(z, y, counts, observed=m, reduce=reduce)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.testing.assert_close(torch.cat([results[0][0], results[1][0]]), whole)
    torch.testing.assert_close(results[0][1], found)


# -- the record and an end-to-end run ------------------------------------------------------------------------


def test_record_declares_multi_label_and_its_claims():
    assert method.kinds == ("multi-label",) and method.hooks == ("loss",)
    assert {c.id for c in method.claims} == {"map-vs-bce", "map-vs-bce-negative", "correction-helps"}
    assert ComicConfig().tau == 0.7 and ComicConfig().gamma_neg == 3.0 and ComicConfig().unobserved == "negative"


def test_example_plan_runs(run_plan):
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "comic" in manifest["methods"]
    assert results["final"]["multi-label/mAP"] > results["initial"]["multi-label/mAP"]
