"""Claims: the verdict rule on constructed numbers, claim plans, and `paperkit verify` end to end."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

from paperkit import Claim, Method, Paper
from paperkit.errors import PaperkitError, PlanError
from paperkit.stats import _t_quantile_fallback, decide, difference, summarize, t_quantile
from paperkit.study import RunRecord
from paperkit.verify import claim_plan_path, judge, method_claims, update_table

SEEDS = [0, 1, 2, 3, 4]


def verdict(variant, baseline, direction="higher", margin=0.0, seeds=True, confidence=0.95):
    s = SEEDS[: len(variant)] if seeds else None
    b = SEEDS[: len(baseline)] if seeds else None
    return decide(difference(variant, baseline, confidence, s, b), direction, margin, confidence)


# -- the verdict rule ------------------------------------------------------------------
def test_clear_improvement_is_supported():
    d = verdict([0.91, 0.92, 0.90, 0.93, 0.91], [0.80, 0.81, 0.79, 0.82, 0.80])
    assert d.verdict == "supported"
    assert d.effect.low > 0 and "above the margin" in d.reason


def test_clear_deficit_is_not_supported():
    d = verdict([0.70, 0.71, 0.69, 0.72, 0.70], [0.80, 0.81, 0.79, 0.82, 0.80])
    assert d.verdict == "not supported"
    assert d.effect.high < 0 and "below the margin" in d.reason


def test_improvement_smaller_than_margin_is_not_supported():
    # +0.01 better, consistently, but the claim says better by more than 0.05
    d = verdict([0.81, 0.82, 0.80, 0.83, 0.81], [0.80, 0.81, 0.79, 0.82, 0.80], margin=0.05)
    assert d.verdict == "not supported"


def test_interval_straddling_the_margin_is_inconclusive():
    # mean difference exactly at the margin, with seed-to-seed spread
    variant = [0.85, 0.83, 0.87, 0.84, 0.86]
    baseline = [0.80, 0.81, 0.79, 0.82, 0.78]
    margin = sum(variant) / 5 - sum(baseline) / 5
    d = verdict(variant, baseline, margin=margin)
    assert d.verdict == "inconclusive"
    assert d.effect.low < margin < d.effect.high


def test_zero_spread_exactly_on_the_margin_is_inconclusive():
    d = verdict([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], margin=0.1 + 1e-12)
    assert d.effect.low == d.effect.high  # a point interval
    assert d.verdict == "not supported"
    on = verdict([1.0, 1.0], [0.5, 0.5], margin=0.5)  # exactly representable: bound == margin
    assert on.verdict == "inconclusive"


def test_one_seed_per_arm_is_inconclusive_however_large_the_gap():
    d = verdict([0.99], [0.10])
    assert d.verdict == "inconclusive" and d.effect.low is None and "at least 2 seeds" in d.reason
    welch = verdict([0.99, 0.98], [0.10], seeds=False)
    assert welch.verdict == "inconclusive"


def test_lower_is_better_flips_the_sign():
    losses_variant, losses_baseline = [0.20, 0.21, 0.19, 0.22], [0.40, 0.41, 0.39, 0.42]
    assert verdict(losses_variant, losses_baseline, direction="lower").verdict == "supported"
    assert verdict(losses_variant, losses_baseline, direction="higher").verdict == "not supported"
    d = verdict(losses_variant, losses_baseline, direction="lower")
    assert d.effect.difference == pytest.approx(0.2)


def test_negative_margin_is_non_inferiority():
    variant = [0.795, 0.805, 0.79, 0.81, 0.80]  # about 0.005 worse than the baseline
    baseline = [0.80, 0.81, 0.795, 0.815, 0.805]
    assert verdict(variant, baseline, margin=0.0).verdict == "not supported"
    assert verdict(variant, baseline, margin=-0.02).verdict == "supported"


def test_paired_interval_matches_scipy_when_seeds_match():
    stats = importlib.import_module("scipy.stats")
    a, b = [0.9, 0.85, 0.93, 0.88], [0.84, 0.83, 0.90, 0.80]
    d = difference(a, b, 0.95, [3, 1, 2, 0], [3, 1, 2, 0])
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert d.test == "paired-t" and d.df == 3
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # pairs are matched by seed, not by position
    shuffled = difference(a, [b[3], b[1], b[2], b[0]], 0.95, [3, 1, 2, 0], [0, 1, 2, 3])
    assert (shuffled.low, shuffled.high) == (pytest.approx(d.low), pytest.approx(d.high))


def test_welch_interval_matches_scipy_when_seeds_differ():
    stats = importlib.import_module("scipy.stats")
    a, b = [0.9, 0.85, 0.93], [0.84, 0.83, 0.90, 0.70, 0.88]
    d = difference(a, b, 0.9, [0, 1, 2], [0, 1, 2, 3, 4])
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert d.test == "welch-t"
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_summary_interval_and_std():
    import statistics

    values = [0.5, 0.7, 0.6, 0.65]
    s = summarize(values, 0.95)
    assert s.mean == pytest.approx(statistics.mean(values)) and s.std == pytest.approx(statistics.stdev(values))
    half = t_quantile(0.975, 3) * s.std / 2
    assert (s.low, s.high) == (pytest.approx(s.mean - half), pytest.approx(s.mean + half))
    one = summarize([0.5])
    assert one.std is None and one.low is None


@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995, 0.025])
@pytest.mark.parametrize("df", [1, 2, 3.5, 7, 30, 1000])
def test_t_quantile_fallback_agrees_with_scipy(p, df):
    assert _t_quantile_fallback(p, df) == pytest.approx(t_quantile(p, df), rel=1e-7, abs=1e-9)


def test_claim_record_rejects_bad_values():
    with pytest.raises(ValueError, match="direction"):
        Claim("c", "s", "paperkit:claims/x.toml", "m", "a", "b", direction="up")
    with pytest.raises(ValueError, match="seeds"):
        Claim("c", "s", "paperkit:claims/x.toml", "m", "a", "b", seeds=(0, 0))
    with pytest.raises(ValueError, match="confidence"):
        Claim("c", "s", "paperkit:claims/x.toml", "m", "a", "b", confidence=95)
    assert Claim("c", "s", "p:x", "m", "a", "b", seeds=[2, 1]).seeds == (2, 1)


# -- records from constructed runs -------------------------------------------------------
def fake_runs(tmp_path: Path, arms: dict[str, list[float]], metric: str = "classification/accuracy") -> list[RunRecord]:
    runs = []
    for label, values in arms.items():
        for seed, value in enumerate(values):
            run_dir = tmp_path / f"{label}-s{seed}"
            run_dir.mkdir(parents=True)
            results = {"status": "completed", "seed": seed, "variant": label, "final": {metric: value}}
            (run_dir / "results.json").write_text(json.dumps(results))
            (run_dir / "manifest.json").write_text(json.dumps({"versions": {"paperkit": "0.1.0"}}))
            runs.append(RunRecord(label, seed, run_dir, results, label))
    return runs


CLAIM = Claim("better", "The method beats the baseline.", "paperkit:claims/adamw_vs_sgd.toml",
              "classification/accuracy", "method", "base", margin=0.0, seeds=(0, 1, 2))


def test_judge_writes_a_complete_record(tmp_path):
    runs = fake_runs(tmp_path, {"method": [0.9, 0.91, 0.92], "base": [0.8, 0.8, 0.83]})
    record = judge("m", CLAIM, runs)
    assert record["verdict"] == "supported"
    assert record["arms"]["variant"] == {"name": "method", "mean": pytest.approx(0.91), "std": pytest.approx(0.01),
                                         "n": 3, "seeds": [0, 1, 2], "values": [0.9, 0.91, 0.92]}
    assert record["difference"] == pytest.approx(0.91 - 0.81)
    assert record["interval"][0] > 0 and record["test"] == "paired-t"
    assert record["versions"] == {"paperkit": "0.1.0"}
    json.dumps(record)  # plain data, no NaN
    assert not any(isinstance(v, float) and math.isnan(v) for v in record.values())


def test_judge_failed_arm_is_inconclusive_and_says_why(tmp_path):
    runs = fake_runs(tmp_path, {"method": [0.9, 0.91], "base": [0.8, 0.8]})
    for r in runs[:2]:
        r.results = {"status": "failed", "error": "loss is nan"}
    record = judge("m", CLAIM, runs)
    assert record["verdict"] == "inconclusive"
    assert "no completed run of method" in record["reason"] and "failed" in record["reason"]


def test_judge_unknown_metric_names_the_available_ones(tmp_path):
    runs = fake_runs(tmp_path, {"method": [0.9, 0.91], "base": [0.8, 0.8]})
    bad = Claim("c", "s", "p:x", "classification/acuracy", "method", "base")
    with pytest.raises(PaperkitError, match="did you mean 'classification/accuracy'"):
        judge("m", bad, runs)


def test_table_update_replaces_only_the_same_claim(tmp_path):
    table = tmp_path / "docs" / "verification.json"
    first = {"key": "a", "claim": "x", "verdict": "supported", "study_dir": "/somewhere"}
    other = {"key": "b", "claim": "y", "verdict": "inconclusive"}
    update_table(table, [first, other])
    update_table(table, [{**first, "verdict": "not supported"}])
    rows = json.loads(table.read_text())
    assert [(r["key"], r["verdict"]) for r in rows] == [("a", "not supported"), ("b", "inconclusive")]
    assert all("study_dir" not in r for r in rows)  # no machine paths in the committed table
    update_table(table, [other], replace=True)
    assert json.loads(table.read_text()) == [other]


# -- claim plans -------------------------------------------------------------------------
def test_builtin_claim_plan_resolves_and_defines_both_arms(paperkit_registry):
    from paperkit.plan import load_plan

    spec, (claim,) = method_claims(paperkit_registry, "adamw")
    assert claim.id == "adamw-vs-sgd" and claim.metric == "classification/accuracy"
    with claim_plan_path(claim.plan) as path:
        plan = load_plan(path, registry=paperkit_registry)
        assert {claim.variant, claim.baseline} <= set(plan.variants)
        assert plan.study.baseline == claim.baseline
        quick = load_plan(path, list(claim.quick), registry=paperkit_registry)
        assert quick.run.epochs < plan.run.epochs


def test_claim_plan_errors_are_one_line(tmp_path):
    with pytest.raises(PlanError, match="cannot import package 'no_such_pkg'"):
        with claim_plan_path("no_such_pkg:claims/x.toml"):
            pass
    with pytest.raises(PlanError, match="no file 'claims/missing.toml' in package 'paperkit'"):
        with claim_plan_path("paperkit:claims/missing.toml"):
            pass
    plain = tmp_path / "plan.toml"
    plain.write_text("")
    with claim_plan_path(str(plain)) as path:
        assert path == plain


def test_method_claims_errors(paperkit_registry):
    with pytest.raises(PlanError, match="did you mean 'adamw'"):
        method_claims(paperkit_registry, "adamww")
    with pytest.raises(PaperkitError, match="declares no claims"):
        method_claims(paperkit_registry, "sgd")
    with pytest.raises(PaperkitError, match="no claim 'nope'"):
        method_claims(paperkit_registry, "adamw", "nope")


# -- end to end ----------------------------------------------------------------------------
def test_verify_builtin_claim_prints_claim_arms_and_verdict(cli, tmp_path):
    table = tmp_path / "table.json"
    code, out, err = cli("verify", "adamw", "--quick", "--set", "run.max_steps=3", "--output", tmp_path / "runs",
                         "--quiet", "--table", table)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "Decoupling weight decay" in flat  # the paper's claim
    assert "adamw:" in flat and "sgd:" in flat and "n=3" in flat  # both arms, quick seeds
    assert "verdict:" in flat and any(v in flat for v in ("SUPPORTED", "NOT SUPPORTED", "INCONCLUSIVE"))
    (study,) = (tmp_path / "runs").iterdir()
    record = json.loads((study / "verification.json").read_text())
    assert record["quick"] is True and record["overrides"] == ["run.max_steps=3"]
    assert record["arms"]["variant"]["n"] == 3 and record["arms"]["baseline"]["n"] == 3
    assert record["budget"]["max_steps"] == 3 and record["budget"]["seeds"] == [0, 1, 2]
    assert record["verdict"] in ("supported", "not supported", "inconclusive")
    assert record["environment"]["produced_by"] == "paperkit verify" and record["environment"]["torch_threads"] == [1]
    assert record["verdict"].upper() in flat
    report = (study / "report.md").read_text()
    assert "## Claim `adamw-vs-sgd` of `adamw`" in report and record["verdict"] in report
    assert (study / "final_metrics.png").stat().st_size > 0
    assert json.loads(table.read_text())[0]["claim"] == "adamw-vs-sgd"


def test_verify_threads_must_be_positive(cli):
    code, _out, err = cli("verify", "adamw", "--threads", "0")
    assert code == 2 and "--threads 0" in err and len(err.strip().splitlines()) == 1


PROBE_PLAN = """
[run]
name = "probe"
max_steps = 2
batch_size = 32
save_model = false

[task]
name = "digits"

[model]
name = "mlp"
depth = 1
width = 8

[optimize]
use = "sgd"

[variants.fast]
optimize = { use = "sgd", lr = 0.5 }

[variants.slow]
optimize = { use = "sgd", lr = 0.001 }
"""


class _NoImpl:
    """Never imported: the probe method below is only a carrier for claims."""


def registry_without_adamw_claim():
    """The built-ins with adamw's claim removed (it has its own test), so --all runs only the probe's."""
    import attrs

    from paperkit import builtin, models, tasks
    from paperkit.registry import Registry
    from paperkit.spec import ModelSpec, TaskSpec

    registry = Registry(autoload=False)
    for module in (builtin, tasks, models):
        for value in vars(module).values():
            if isinstance(value, Method):
                registry.add(attrs.evolve(value, claims=()), distribution="paperkit")
            elif isinstance(value, (TaskSpec, ModelSpec)):
                registry.add(value, distribution="paperkit")
    return registry


def test_verify_all_writes_the_table_and_lists_broken_claims(cli, tmp_path, monkeypatch):
    from paperkit import verify

    paperkit_registry = registry_without_adamw_claim()

    plan = tmp_path / "probe.toml"
    plan.write_text(PROBE_PLAN)
    good = Claim("fast-wins", "A larger step learns more in two steps.", str(plan), "classification/accuracy",
                 "fast", "slow", seeds=(0, 1), quick_seeds=(0, 1))
    broken = Claim("typo", "Names a variant the plan lacks.", str(plan), "classification/accuracy", "fastt", "slow")
    paperkit_registry.add(Method(key="probe", summary="claims only", paper=Paper("Probe", 2024), hooks=("optimize",),
                                 implementation="tests.test_verify:_NoImpl", claims=(good, broken)))
    monkeypatch.setattr(verify, "installed_registry", lambda: paperkit_registry)
    monkeypatch.setattr(verify, "DEFAULT_TABLE", str(tmp_path / "docs" / "verification.json"))
    code, out, _ = cli("verify", "--all", "--quick", "--output", tmp_path / "runs", "--quiet")
    assert code == 1  # one claim could not run
    rows = json.loads((tmp_path / "docs" / "verification.json").read_text())
    by_claim = {(r["key"], r["claim"]): r for r in rows}
    assert by_claim[("probe", "typo")]["verdict"] == "error" and "did you mean 'fast'" in by_claim[("probe", "typo")]["reason"]
    ok = by_claim[("probe", "fast-wins")]
    assert ok["verdict"] in ("supported", "not supported", "inconclusive") and ok["arms"]["variant"]["n"] == 2
    assert {"key", "claim", "statement", "metric", "arms", "difference", "interval", "verdict", "quick", "date", "versions"} <= set(ok)
    assert "verification" in out  # the summary table


def test_claims_sharing_a_plan_run_each_arm_and_seed_once(cli, tmp_path, monkeypatch):
    """Two claims on one plan (the same arms, another metric): the second claim reuses the first one's runs."""
    from paperkit import verify

    paperkit_registry = registry_without_adamw_claim()
    plan = tmp_path / "probe.toml"
    plan.write_text(PROBE_PLAN)
    accuracy = Claim("fast-wins", "A larger step learns more.", str(plan), "classification/accuracy", "fast", "slow",
                     seeds=(0, 1), quick_seeds=(0, 1))
    loss = Claim("fast-lower-loss", "A larger step lowers the loss.", str(plan), "classification/loss", "fast", "slow",
                 direction="lower", seeds=(0, 1), quick_seeds=(0, 1))
    paperkit_registry.add(Method(key="probe", summary="claims only", paper=Paper("Probe", 2024), hooks=("optimize",),
                                 implementation="tests.test_verify:_NoImpl", claims=(accuracy, loss)))
    monkeypatch.setattr(verify, "installed_registry", lambda: paperkit_registry)
    code, _out, _ = cli("verify", "probe", "--quick", "--output", tmp_path / "runs", "--quiet")
    assert code == 0
    studies = sorted((tmp_path / "runs").glob("verify-probe-*"))
    assert len(studies) == 2
    run_dirs = [p for s in studies for p in s.iterdir() if (p / "results.json").is_file()]
    assert len(run_dirs) == 4  # 2 arms x 2 seeds, made once (by the first claim's study)
    second = json.loads((studies[0] / "verification.json").read_text()), json.loads((studies[1] / "verification.json").read_text())
    assert {r["claim"] for r in second} == {"fast-wins", "fast-lower-loss"}
    assert all(r["arms"]["variant"]["n"] == 2 and r["arms"]["baseline"]["n"] == 2 for r in second)


def test_quiet_verify_prints_a_line_per_run_with_the_time_left() -> None:
    from paperkit.progress import SummaryProgress, format_seconds

    lines: list[str] = []
    clock = iter([0.0, 0.0, 10.0, 10.0, 30.0, 30.0, 40.0])
    progress = SummaryProgress(write=lines.append)
    progress._clock = lambda: next(clock)
    progress.start_study(3)
    for label in ("a seed 0", "b seed 0", "a seed 1"):
        progress.start_run(label, 1)
        progress.run_done()
    assert lines == ["[1/3] a seed 0: 10 s; about 20 s left", "[2/3] b seed 0: 20 s; about 15 s left",
                     "[3/3] a seed 1: 10 s; study done"]
    assert [format_seconds(s) for s in (0.4, 59, 61, 3600 + 125)] == ["0 s", "59 s", "1 min 1 s", "1 h 2 min"]


def test_every_published_record_reads_back_as_a_typed_record_and_loses_nothing() -> None:
    """The typed record (paperkit.evidence) is what every view formats; reading a published row and writing it
    again gives the same row, old records (no environment) included."""
    from paperkit.evidence import Verification, load_table

    rows = json.loads((Path(__file__).resolve().parents[1] / "docs" / "verification.json").read_text())
    records = load_table(rows)
    assert len(records) == len(rows) > 100
    for row, record in zip(rows, records, strict=True):
        assert record.as_dict(machine=False) == row, row["key"]
    supported = next(r for r in records if r.verdict == "supported" and r.interval)
    low, high = supported.interval
    assert supported.difference_text() == f"{supported.difference:+.4f} [{low:+.4f}, {high:+.4f}]"
    assert Verification.from_dict({"key": "k", "claim": "c", "verdict": "inconclusive"}).difference_text() == "-"
