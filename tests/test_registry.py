"""The method registry: options declared once, read by the CLI, the service and settings()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xai_onnx import InputError, Model
from xai_onnx.cli import main
from xai_onnx.registry import METHODS, Option, add_method_arguments, make_explainer, method_table, parse_methods


@pytest.fixture(scope="module")
def model(handmade):
    return Model(handmade[0])


def test_every_method_is_registered_with_options():
    assert {"ig", "saliency", "grad_x_input", "occlusion", "fd"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name
        keys = [o.key for o in cls.options]
        assert len(keys) == len(set(keys)), name
        assert {"baseline", "output", "batch_size"} <= set(keys), name


@pytest.mark.parametrize("name", ["ig", "saliency", "grad_x_input", "occlusion", "fd"])
def test_settings_round_trip(model, name):
    cls = METHODS[name]
    ex = cls(model)
    again = type(ex)(model, **ex.settings())
    assert again.settings() == ex.settings()
    assert set(ex.settings()) == {o.name for o in cls.options}


def test_settings_round_trip_keeps_non_defaults(model):
    ig = make_explainer(model, "ig", {"steps": 7, "integration": "riemann_left", "output": "logit", "baseline": "mask"})
    again = type(ig)(model, **ig.settings())
    assert again.settings() == ig.settings()
    assert (ig.settings()["n_steps"], ig.settings()["method"]) == (7, "riemann_left")
    texts = ["good film", "bad"]
    a, b = ig.explain(texts), again.explain(texts)
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b))


@pytest.mark.parametrize("method,options", [
    ("ig", {"steps": 0}), ("ig", {"steps": -1}), ("ig", {"steps": 10**8}), ("occlusion", {"window": 0}),
    ("occlusion", {"stride": 0}), ("fd", {"epsilon": 0.0}), ("fd", {"epsilon": 1.0}), ("ig", {"tolerance": 0.0}),
    ("ig", {"steps": 1.5}), ("ig", {"steps": "5"}), ("ig", {"steps": True}), ("ig", {"steps": 1e30}),
    ("fd", {"epsilon": float("nan")}), ("ig", {"integration": "simpson"}), ("ig", {"output": "probability"}),
    ("occlusion", {"batch_size": 0}),
])
def test_bad_values_are_refused_naming_the_option(model, method, options):
    with pytest.raises(InputError) as exc:
        make_explainer(model, method, options)
    assert repr(next(iter(options))) in str(exc.value)


@pytest.mark.parametrize("kwargs", [{"window": "2"}, {"window": 1.5}, {"window": 0}, {"stride": None, "window": True}])
def test_python_constructor_checks_types(model, kwargs):
    from xai_onnx import Occlusion

    with pytest.raises(InputError, match="window"):
        Occlusion(model, **kwargs)


def test_strict_mode_refuses_options_of_other_methods(model):
    make_explainer(model, "saliency", {"window": 3})  # the CLI passes every flag: ignored
    with pytest.raises(InputError, match="window"):
        make_explainer(model, "saliency", {"window": 3}, strict=True)


def test_option_parse_from_text():
    opt = Option("n", int, 1, "n", minimum=1)
    assert opt.parse("3", text=True) == 3
    for bad in ("0", "x", "1e3", "99999999999999999999"):
        with pytest.raises(InputError):
            opt.parse(bad, text=True)
    assert Option("f", float, 0.5, "f", above=0).parse("0.25", text=True) == 0.25
    assert Option("b", bool, False, "b").parse("true", text=True) is True


def test_parse_methods():
    assert parse_methods("ig, occlusion") == ["ig", "occlusion"]
    assert parse_methods(["ig"]) == ["ig"]
    for bad in (",", "", "ig,,fd", "ig,ig", "nope", ["ig", 3], {"a": 1}):
        with pytest.raises(InputError):
            parse_methods(bad)


def test_cli_flags_come_from_the_registry():
    import argparse

    p = argparse.ArgumentParser()
    add_method_arguments(p)
    flags = {a.dest for a in p._actions}
    for cls in METHODS.values():
        for o in cls.options:
            assert o.key in flags


@pytest.mark.parametrize("flags,needle", [
    (["--method", "ig", "--steps", "0"], "steps"), (["--method", "occlusion", "--window", "0"], "window"),
    (["--method", "occlusion", "--stride", "0"], "stride"), (["--method", "fd", "--epsilon", "0"], "epsilon"),
    (["--method", ","], "method"),
])
def test_cli_refuses_zero_instead_of_defaulting(handmade, capsys, flags, needle):
    try:
        rc = main(["explain", str(handmade[0]), "--text", "good film", *flags])
    except SystemExit as exc:  # argparse refuses a bad flag value itself
        rc = exc.code
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_cli_steps_are_used(handmade, capsys):
    assert main(["explain", str(handmade[0]), "--text", "good film", "--method", "ig", "--steps", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["settings"]["n_steps"] == 3


def test_method_table_describes_bounds():
    table = {t["name"]: t for t in method_table()}
    steps = next(o for o in table["ig"]["options"] if o["name"] == "steps")
    assert steps["minimum"] == 1 and steps["maximum"] >= 50 and steps["default"] == 50
    assert table["ig"]["needs_gradient"] and not table["occlusion"]["needs_gradient"]
