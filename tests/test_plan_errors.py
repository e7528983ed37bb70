"""Each class of plan error gives one line naming file, table and key, and exit status 2."""

from __future__ import annotations

import pytest

from tests.conftest import DIGITS_PLAN

CASES = {
    "toml-syntax": ("[run\nepochs = 1", "TOML syntax error"),
    "unknown-table": (DIGITS_PLAN + "\n[optimise]\nuse='sgd'\n", "[optimise]"),
    "unknown-run-key": (DIGITS_PLAN.replace("epochs = 1", "epochs = 1\nepoch = 2"), "[run] epoch: unknown key (did you mean 'epochs'?)"),
    "wrong-type": (DIGITS_PLAN.replace("epochs = 1", 'epochs = "ten"'), "[run] epochs: expected an integer"),
    "float-for-int": (DIGITS_PLAN.replace("epochs = 1", "epochs = 1.5"), "[run] epochs: expected an integer"),
    "out-of-range": (DIGITS_PLAN.replace("epochs = 1", "epochs = 0"), "[run] epochs"),
    "empty-seeds": (DIGITS_PLAN.replace("seeds = [0]", "seeds = []"), "[run] seeds"),
    "negative-lr": (DIGITS_PLAN + "lr = -0.1\n", "[optimize] lr"),
    "unknown-method": (DIGITS_PLAN.replace('use = "adamw"', 'use = "adamv"'), "unknown method 'adamv' (did you mean"),
    "unknown-method-key": (DIGITS_PLAN + "betas2 = 1\n", "[optimize] betas2: unknown key"),
    "unknown-task": (DIGITS_PLAN.replace('name = "digits"', 'name = "digit"'), "[task] name: unknown task 'digit' (did you mean 'digits'?)"),
    "unknown-model": (DIGITS_PLAN.replace('name = "mlp"', 'name = "mpl"'), "[model] name: unknown model 'mpl'"),
    "task-option": (DIGITS_PLAN.replace('name = "digits"', 'name = "digits"\ntest_fraction = 2.0'), "[task] test_fraction"),
    "wrong-section": (DIGITS_PLAN + "\n[init]\nuse = 'adamw'\n", "method 'adamw' implements optimize, not init; put it under [optimize]"),
    "two-optimizers": (DIGITS_PLAN.replace('[optimize]\nuse = "adamw"', '[[optimize]]\nuse = "adamw"\n[[optimize]]\nuse = "sgd"'), "both claim the optimizer exclusively"),
    "no-optimizer": (DIGITS_PLAN.replace('[optimize]\nuse = "adamw"', ""), "no method provides the optimizer"),
    "missing-use": (DIGITS_PLAN.replace('use = "adamw"', 'lr = 0.1'), "[optimize] use: missing key 'use'"),
    "missing-task": (DIGITS_PLAN.replace('[task]\nname = "digits"', ""), "[task]: missing table"),
    "twice": (DIGITS_PLAN.replace('[optimize]\nuse = "adamw"', '[[optimize]]\nuse = "adamw"\n[[optimize]]\nuse = "adamw"'), "appears twice"),
    "bad-variant": (DIGITS_PLAN + "\n[variants.fast]\nrun = { epochs = -1 }\n", "[variants.fast] [run] epochs"),
    "variant-unknown-section": (DIGITS_PLAN + "\n[variants.fast]\noptimise = { use = 'sgd' }\n", "[variants.fast]"),
    "bad-baseline": (DIGITS_PLAN + "\n[variants.a]\n[study]\nbaseline = 'b'\n", "[study] baseline"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_error_is_one_line_with_exit_2(case, cli, write_plan):
    text, expected = CASES[case]
    path = write_plan(text)
    code, out, err = cli("plan", "check", path)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert str(path) in lines[0]
    assert expected in lines[0], lines[0]


def test_missing_plan_file(cli, tmp_path):
    code, _out, err = cli("plan", "check", tmp_path / "nope.toml")
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1


def test_set_override_applies_and_is_validated(cli, write_plan):
    path = write_plan(DIGITS_PLAN)
    code, out, _ = cli("plan", "explain", path, "--set", "optimize.lr=0.5")
    assert code == 0 and "lr = 0.5" in out
    code, _, err = cli("plan", "check", path, "--set", "optimize.lrr=0.5")
    assert code == 2 and "[optimize] lrr: unknown key (did you mean 'lr'?)" in err
    code, _, err = cli("plan", "check", path, "--set", "nonsense")
    assert code == 2 and "expected table.key=value" in err


def test_valid_plan_checks_ok(cli, write_plan):
    code, out, err = cli("plan", "check", write_plan(DIGITS_PLAN))
    assert code == 0, err
    assert "ok" in out


def test_explain_shows_order_and_defaults(cli, write_plan):
    code, out, _ = cli("plan", "explain", write_plan(DIGITS_PLAN))
    assert code == 0
    assert "cross-entropy (default)" in out
    assert "weight_decay = 0.01" in out  # AdamW's default filled in
    assert "classification (default)" in out


def test_overrides_reach_variants_that_replace_the_table() -> None:
    """--set and --output win over a variant's own [run] (or any table it replaces), where the key fits."""
    from paperkit.plan import load_plan
    from paperkit.testing import builtin_registry

    text = DIGITS_PLAN + '\n[variants.long]\nrun = { name = "v", epochs = 9 }\n[variants.two]\noptimize = [{ use = "sgd" }, { use = "sam" }]\n'
    overrides = ["run.output=elsewhere", "run.epochs=1", "optimize.lr=0.5"]
    registry = builtin_registry()
    long = load_plan("p.toml", overrides, variant="long", registry=registry, text=text)
    assert str(long.run.output) == "elsewhere" and long.run.epochs == 1
    two = load_plan("p.toml", overrides, variant="two", registry=registry, text=text)  # two entries: not its override
    assert [u.key for u in two.methods if u.section == "optimize"] == ["sgd", "sam"]


def _needs_width_64(plan, config) -> None:  # noqa: ANN001 - a Method.check as a plugin writes one
    if getattr(plan.model.config, "width", None) != 64:
        raise ValueError("needs [model] width = 64")


def test_a_method_check_refuses_a_plan_before_anything_trains(tmp_path) -> None:
    """``Method.check(plan, config)`` runs at plan check: its ValueError is one PlanError naming the method."""
    from paperkit import Method, Paper, PlanError, PluginError
    from paperkit.plan import load_plan
    from paperkit.testing import builtin_registry

    registry = builtin_registry()
    for key, check in (("needs-64", _needs_width_64), ("broken-check", "tests.test_plan_errors:no_such_function")):
        registry.add(
            Method(key=key, summary="test", paper=Paper("test", 2024), hooks=("evaluate",),
                   implementation="tests.test_plan_errors:_needs_width_64", touches=("metrics",), check=check),
            distribution=f"paperkit-test-{key}",
            version="0.1.0",
        )
    path = tmp_path / "plan.toml"
    path.write_text(DIGITS_PLAN + '\n[evaluate]\nuse = "needs-64"\n')
    with pytest.raises(PlanError, match=r"\[evaluate\]: needs-64: needs \[model\] width = 64"):
        load_plan(path, registry=registry)
    assert load_plan(path, ["model.width=64"], registry=registry).model.config.width == 64
    path.write_text(DIGITS_PLAN + '\n[evaluate]\nuse = "broken-check"\n')
    with pytest.raises(PluginError, match="broken-check.*cannot be loaded"):
        load_plan(path, registry=registry)
