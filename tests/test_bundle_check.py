"""Bundles that lie: files named outside the bundle, and manifests that disagree with the graphs, the tokenizer or
the embedding table. Each is refused at load with one BundleError line that says what disagrees."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xai_onnx import BundleError, Model, Saliency


@pytest.fixture()
def bundle(handmade, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(handmade[0], out)
    return out


def edit(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def refused(bundle: Path, *needles: str) -> str:
    with pytest.raises(BundleError) as info:
        Model(bundle)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ---- item 8: every file the manifest names stays inside the bundle -------------------------------------------
@pytest.fixture()
def elsewhere(handmade, tmp_path) -> Path:
    """A complete copy of the bundle outside the bundle under test: what a lying manifest would point at."""
    out = tmp_path / "elsewhere"
    shutil.copytree(handmade[0], out)
    return out


@pytest.mark.parametrize("field", ["forward", "gradient", "tokenizer_file", "embeddings_file", "weights_file",
                                   "head_file"])
@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_file_names_outside_the_bundle_are_refused(bundle, elsewhere, field, how):
    def point_out(m: dict[str, Any]) -> None:
        name = m[field]["file"] if field in ("forward", "gradient") else m[field]
        target = str(elsewhere / name) if how == "absolute" else f"../elsewhere/{name}"
        if field in ("forward", "gradient"):
            m[field]["file"] = target
        else:
            m[field] = target

    edit(bundle, point_out)
    refused(bundle, field, "outside the bundle")


def test_symlink_leading_out_is_refused(bundle, elsewhere):
    os.symlink(elsewhere / "tokenizer.json", bundle / "tok.json")
    edit(bundle, lambda m: m.update(tokenizer_file="tok.json"))
    refused(bundle, "tokenizer_file", "link", "outside the bundle")


def test_symlink_inside_the_bundle_is_fine(bundle):
    os.symlink("tokenizer.json", bundle / "tok.json")
    edit(bundle, lambda m: m.update(tokenizer_file="tok.json"))
    assert Model(bundle).predict(["good movie"])[0].label


def test_passwd_as_tokenizer_is_not_opened(bundle):
    edit(bundle, lambda m: m.update(tokenizer_file="/etc/passwd"))
    refused(bundle, "tokenizer_file", "'/etc/passwd'", "outside the bundle")


def test_external_weights_outside_the_bundle_are_refused_by_onnxruntime(tmp_path):
    """A graph whose external data points out of its directory (``../``, or a link leading out): onnxruntime refuses
    it, and the runtime reports that as a corrupt bundle."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from xai_onnx.session import create_session

    d = tmp_path / "bundle"
    d.mkdir()
    w = np.ones((64, 64), np.float32)
    (tmp_path / "outside.bin").write_bytes(w.tobytes())
    os.symlink(tmp_path / "outside.bin", d / "link.bin")
    for name, location in (("dotdot.onnx", "../outside.bin"), ("link.onnx", "link.bin"),
                           ("absolute.onnx", str(tmp_path / "outside.bin"))):
        t = TensorProto(name="W", dims=[64, 64], data_type=TensorProto.FLOAT, data_location=TensorProto.EXTERNAL)
        for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [t])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(d / name))
        with pytest.raises(BundleError, match="cannot load"):
            create_session(d / name, ["CPUExecutionProvider"], None)


# ---- item 9: the manifest against itself, the tokenizer, the embeddings and the graphs -----------------------
def _resave_embeddings(bundle: Path, rows: int | None = None, dim: int | None = None, dtype: Any = np.float32) -> None:
    e = np.load(bundle / "embeddings.npy")
    rows, dim = rows or e.shape[0], dim or e.shape[1]
    out = np.zeros((rows, dim), dtype=np.float32)
    out[:min(rows, e.shape[0]), :min(dim, e.shape[1])] = e[:rows, :dim]
    np.save(bundle / "embeddings.npy", out.astype(dtype))


def test_empty_labels(bundle):
    edit(bundle, lambda m: m.update(labels=[]))
    refused(bundle, "labels are empty")


def test_duplicate_labels(bundle):
    edit(bundle, lambda m: m.update(labels=["a", "b", "a"]))
    refused(bundle, "labels", "'a'")


@pytest.mark.parametrize("value", [-1, 0, 2])
def test_max_length_without_room_for_text(bundle, value):
    edit(bundle, lambda m: m.update(max_length=value))
    refused(bundle, "max_length", str(value))


def test_vocab_size_below_the_tokenizers(bundle):
    edit(bundle, lambda m: m.update(vocab_size=10))
    _resave_embeddings(bundle, rows=10)  # consistent with the manifest, not with the tokenizer (ids up to 13)
    refused(bundle, "vocab_size is 10", "13")


@pytest.mark.parametrize("role,value,needle", [("pad", 99, "outside"), ("pad", -1, "outside"),
                                               ("mask", 0, "the tokenizer gives it id 4")])
def test_special_token_ids(bundle, role, value, needle):
    edit(bundle, lambda m: m["special_tokens"][role].update(id=value))
    refused(bundle, f"special token {role}", needle)


@pytest.mark.parametrize("graph,table,role", [("forward", "inputs", "attention_mask"), ("forward", "outputs", "logits"),
                                              ("forward", "outputs", "features")])
def test_tensor_names_the_graph_lacks(bundle, graph, table, role):
    edit(bundle, lambda m: m[graph][table].update({role: "nope"}))
    refused(bundle, f"{graph}.{table}.{role}", "'nope'", "no ")


def test_gradient_tensor_names_are_checked_before_first_use(bundle):
    edit(bundle, lambda m: m["gradient"]["inputs"].update(w_prob="nope"))
    model = Model(bundle)  # the gradient graph is loaded on first use ...
    with pytest.raises(BundleError, match="gradient.inputs.w_prob"):
        Saliency(model)  # ... and checked before it runs


def test_graph_input_the_manifest_does_not_name(bundle):
    edit(bundle, lambda m: m["forward"]["inputs"].pop("attention_mask"))
    refused(bundle, "attention_mask")


def test_embedding_dim_disagrees_with_the_graph(bundle):
    edit(bundle, lambda m: m.update(embedding_dim=5))
    _resave_embeddings(bundle, dim=5)
    refused(bundle, "inputs_embeds", "embedding axis", "manifest says 5")


@pytest.mark.parametrize("labels", [["a", "b"], ["a", "b", "c", "d"]])
def test_label_count_disagrees_with_the_logits(bundle, labels):
    edit(bundle, lambda m: m.update(labels=labels))
    refused(bundle, "logits", "labels axis", f"manifest says {len(labels)}")


def test_label_count_disagrees_with_dynamic_logits(bundle):
    """A graph that does not declare its logits width: the tiny run at load finds it."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(bundle / "forward.onnx"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "n_labels"
    onnx.save(model, str(bundle / "forward.onnx"))
    assert Model(bundle).labels  # still fine with the right labels
    edit(bundle, lambda m: m.update(labels=["a", "b"]))
    refused(bundle, "logits", "has 3 along its labels axis", "manifest says 2")


def test_feature_dim_disagrees_with_the_graph(bundle):
    edit(bundle, lambda m: m.update(feature_dim=7))
    refused(bundle, "features", "feature_dim")


@pytest.mark.parametrize("dtype", [np.int8, np.float64, np.int64])
def test_embeddings_of_another_type(bundle, dtype):
    _resave_embeddings(bundle, dtype=dtype)
    refused(bundle, "embeddings.npy", np.dtype(dtype).name, "float32 or float16")


def test_float16_embeddings_load(bundle, handmade):
    _resave_embeddings(bundle, dtype=np.float16)
    a, b = Model(bundle).predict(["good movie"])[0], Model(handmade[0]).predict(["good movie"])[0]
    assert a.label == b.label
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-2)


def test_the_handmade_bundle_passes_every_check(handmade, handmade_forward_only, handmade_without_top):
    for d in (handmade[0], handmade_forward_only, handmade_without_top):
        model = Model(d)
        if model.has_gradient:
            Saliency(model)  # the gradient graph checked too
