"""Registry guards: broken plugins get a status and never take the tool down."""

from __future__ import annotations

import attrs
import pytest

from paperkit import Method, Paper, hookimpl
from paperkit.errors import PlanError, PluginError
from paperkit.plan import load_plan
from paperkit.testing import builtin_registry
from tests.conftest import DIGITS_PLAN

PAPER = Paper("A test paper", 2024)


class GoodImpl:
    def __init__(self, config):
        pass

    @hookimpl
    def init(self, model):
        pass


class DefaultParamImpl:
    def __init__(self, config):
        pass

    @hookimpl
    def init(self, model, ctx=None):
        pass


class MisspelledImpl:
    def __init__(self, config):
        pass

    @hookimpl
    def inti(self, model):
        pass


class WrongArgImpl:
    def __init__(self, config):
        pass

    @hookimpl
    def init(self, modle):
        pass


def method(key="good", impl=GoodImpl, **kw):
    return Method(key=key, summary="test", paper=PAPER, hooks=kw.pop("hooks", ("init",)), implementation=impl, **kw)


def test_good_method_loads():
    reg = builtin_registry()
    reg.add(method())
    assert reg.implementation(reg.get("method", "good")) is GoodImpl


@pytest.mark.parametrize(
    "impl, message",
    [
        (DefaultParamImpl, "has a default"),
        (MisspelledImpl, "no such hook exists (did you mean 'init'?)"),
        (WrongArgImpl, "takes 'modle'"),
    ],
)
def test_invalid_hook_implementations_are_rejected(impl, message):
    reg = builtin_registry()
    reg.add(method(impl=impl))
    with pytest.raises(PluginError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        reg.implementation(reg.get("method", "good"))


def test_declared_hooks_must_match_implementation():
    reg = builtin_registry()
    reg.add(method(hooks=("init", "adapt")))
    with pytest.raises(PluginError, match="declares hooks"):
        reg.implementation(reg.get("method", "good"))


def test_two_distributions_claiming_one_key_conflict():
    reg = builtin_registry()
    reg.add(method(), distribution="dist-a")
    reg.add(method(), distribution="dist-b")
    record = reg.record("method", "good")
    assert record.status == "conflict" and "dist-a" in record.error and "dist-b" in record.error
    with pytest.raises(PlanError, match="conflict"):
        reg.get("method", "good")


def test_incompatible_api_version():
    reg = builtin_registry()
    reg.add(method(api_version=99))
    assert reg.record("method", "good").status == "incompatible"


def test_import_error_in_implementation():
    reg = builtin_registry()
    reg.add(method(impl="paperkit_does_not_exist.hooks:Impl"))
    assert reg.record("method", "good").status == "ok"  # metadata loads; the code does not
    with pytest.raises(PluginError, match="importing paperkit_does_not_exist.hooks:Impl failed"):
        reg.implementation(reg.get("method", "good"))


def test_import_error_at_entry_point_is_a_status():
    reg = builtin_registry()

    def boom():
        raise ImportError("no module named 'numpyy'")

    from paperkit.registry import _Source

    reg._sources[("method", "broken")] = [_Source("paperkit-broken", "0.1", "paperkit_broken:method", boom)]
    record = reg.record("method", "broken")
    assert record.status == "import-error" and "numpyy" in record.error
    assert reg.record("method", "adamw").ok  # others unaffected


def test_unknown_touch_is_invalid():
    reg = builtin_registry()
    reg.add(method(touches=("wieghts",)))
    assert reg.record("method", "good").status == "invalid"


def test_exclusive_touch_conflict_is_a_plan_error(tmp_path):
    reg = builtin_registry()
    reg.add(method(key="a", exclusive=("targets",)))
    reg.add(method(key="b", exclusive=("targets",)))
    text = DIGITS_PLAN + "\n[[init]]\nuse = 'a'\n[[init]]\nuse = 'b'\n"
    with pytest.raises(PlanError, match="both claim the targets exclusively"):
        load_plan(tmp_path / "p.toml", text=text, registry=reg)


def test_two_loss_replacements_conflict(tmp_path):
    @attrs.define
    class Cfg:
        pass

    class Loss:
        def __init__(self, config):
            pass

        @hookimpl
        def loss(self, outputs):
            return outputs.logits.sum()

    reg = builtin_registry()
    reg.add(Method(key="loss-a", summary="", paper=PAPER, hooks=("loss",), implementation=Loss))
    reg.add(Method(key="loss-b", summary="", paper=PAPER, hooks=("loss",), implementation=Loss))
    text = DIGITS_PLAN + "\n[[regularize]]\nuse = 'loss-a'\n[[regularize]]\nuse = 'loss-b'\n"
    with pytest.raises(PlanError, match="both claim the loss exclusively"):
        load_plan(tmp_path / "p.toml", text=text, registry=reg)


def test_builtin_plugins_all_ok(cli):
    import json

    code, out, _ = cli("plugins", "--json")
    rows = json.loads(out)
    assert code == 0
    keys = {r["key"] for r in rows}
    assert {"adamw", "sgd", "adam", "cross-entropy", "classification", "naive", "digits", "split-digits", "mlp"} <= keys
    assert [r for r in rows if r["status"] != "ok"] == []
