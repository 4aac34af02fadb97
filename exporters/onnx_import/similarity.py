"""An imported encoder without a head made into the similarity graphs the torch exporter writes
(:class:`xai_onnx_exporters.sources._SentenceEncoder` and the similarity branch of
:func:`xai_onnx_exporters.trace.make_functions`):

- forward: the encoder's hidden states pooled (the mean over real tokens, or the first token) and optionally
  L2-normalised, as the output ``features`` (batch, features);
- gradient: ``other`` (batch, features) in, ``logits`` (batch, 1) = cos(features, other) out, the cosine written as
  ``sum(f * o) / max(|f| |o|, 1e-12)`` like the exporter's, and ``grad`` = d sum(cosine) / d inputs_embeds.

The pooling follows a sentence-transformers layout where the source has one (``modules.json``, ``1_Pooling/
config.json``, a ``Normalize`` module), as ``xai-onnx export`` reads it; mean pooling without normalisation otherwise.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportInputError

POOLINGS = ("mean", "cls")
FEATURES = "features"
# outputs an optimum feature-extraction export names its token states with (transformers, sentence-transformers)
HIDDEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


def sentence_transformers_pooling(directory: Path) -> tuple[str, bool] | None:
    """(pooling, normalize) from a sentence-transformers layout in ``directory``; None where it has none."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportInputError(f"cannot read {modules_file}: {exc}") from exc
    pooling, normalize = "mean", False
    for mod in modules if isinstance(modules, list) else []:
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1] if isinstance(mod, dict) else ""
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            cfg_file = directory / str(mod.get("path", "")) / "config.json"
            try:
                cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ExportInputError(f"cannot read the pooling configuration {cfg_file}: {exc}") from exc
            modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode_") and v)
            if modes == ["pooling_mode_mean_tokens"]:
                pooling = "mean"
            elif modes == ["pooling_mode_cls_token"]:
                pooling = "cls"
            else:
                raise ExportInputError(f"pooling {modes} in {cfg_file} is not supported: only mean or CLS pooling "
                                       "(or give --pooling mean|cls to override it)")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ExportInputError(f"sentence-transformers module {kind!r} in {modules_file} is not supported "
                                   "(supported: Transformer, Pooling, Normalize)")
    return pooling, normalize


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class _Nodes:
    """Appends nodes named ``prefix/...`` to a graph, in the form the model's opset takes."""

    def __init__(self, model: onnx.ModelProto, prefix: str):
        self.graph = model.graph
        self.opset = _opset(model)
        self.prefix = prefix
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{self.prefix}/{hint}_{self.n}"

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        y = out or self.name(op_type)
        self.graph.node.append(helper.make_node(op_type, inputs, [y], name=self.name(op_type + "_node"), **attrs))
        return y

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        name = self.name("const")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def reduce_sum(self, x: str, axes: list[int], keepdims: int) -> str:
        if self.opset >= 13:
            return self.op("ReduceSum", [x, self.const(axes, np.int64)], keepdims=keepdims)
        return self.op("ReduceSum", [x], axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(axes, np.int64)])
        return self.op("Unsqueeze", [x], axes=axes)

    def norm(self, x: str) -> str:
        """|x| over the last axis, kept: (batch, 1)."""
        return self.op("Sqrt", [self.reduce_sum(self.op("Mul", [x, x]), [-1], keepdims=1)])


def add_pooling(model: onnx.ModelProto, hidden: str, width: int, pooling: str, normalize: bool) -> None:
    """Pool ``hidden`` (batch, sequence, width) into the graph's only output ``features`` (batch, width), in place."""
    if pooling not in POOLINGS:
        raise ExportInputError(f"--pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    b = _Nodes(model, "pool")
    states = "pool/hidden_states"  # the name ``hidden`` had is free for the gradient graph's cosine (``logits``)
    for node in model.graph.node:
        node.input[:] = [states if x == hidden else x for x in node.input]
        node.output[:] = [states if y == hidden else y for y in node.output]
    hidden = states
    if pooling == "mean":
        m = b.unsqueeze(b.op("Cast", ["attention_mask"], to=TensorProto.FLOAT), [-1])  # (batch, sequence, 1)
        total = b.reduce_sum(b.op("Mul", [hidden, m]), [1], keepdims=0)
        count = b.op("Max", [b.reduce_sum(m, [1], keepdims=0), b.const(1e-9)])  # (batch, 1), as torch clamps it
        pooled = b.op("Div", [total, count])
    else:
        pooled = b.op("Gather", [hidden, b.const(0, np.int64)], axis=1)
    if normalize:  # torch.nn.functional.normalize: x / max(|x|, 1e-12)
        pooled = b.op("Div", [pooled, b.op("Max", [b.norm(pooled), b.const(1e-12)])])
    b.op("Identity", [pooled], FEATURES)
    batch = _dim_name(model, 0)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [batch, width]))


def cosine_model(forward: onnx.ModelProto, logits: str = "logits") -> onnx.ModelProto:
    """A copy of the pooled forward graph with the input ``other`` (batch, features) and the output ``logits``
    (batch, 1) = cos(features, other), what :func:`~.autodiff.gradient_model` differentiates with ``objective="sum"``."""
    model = copy.deepcopy(forward)
    width = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value or "features"
    batch = _dim_name(model, 0)
    model.graph.input.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [batch, width]))
    b = _Nodes(model, "cosine")
    dot = b.reduce_sum(b.op("Mul", [FEATURES, "other"]), [-1], keepdims=1)
    den = b.op("Max", [b.op("Mul", [b.norm(FEATURES), b.norm("other")]), b.const(1e-12)])
    b.op("Div", [dot, den], logits)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch, 1]))
    return model


def _dim_name(model: onnx.ModelProto, axis: int) -> str:
    first = model.graph.input[0].type.tensor_type.shape.dim
    return (first[axis].dim_param if len(first) > axis and first[axis].dim_param else "batch")


def pooling_of_sentence_embedding(original: Path, hidden: str, vocab: int, fill_id: int,
                                  pad_ids: tuple[int, ...]) -> tuple[str, bool] | None:
    """(pooling, normalize) that turn the original graph's ``hidden`` token states into its own
    ``sentence_embedding`` output (optimum's sentence-transformers export has both), found by running it on two rows
    of random ids, one padded; None when no mean or CLS pooling, normalised or not, gives it (within 1e-4)."""
    from .validate_fd import _dtype, _session, pool

    sess = _session(original)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, vocab, size=(2, 9))
    ids[np.isin(ids, pad_ids)] = fill_id
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = pad_ids[0]
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v.astype(_dtype(sess, k)) for k, v in
             (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", np.zeros_like(ids))) if k in names}
    states, sentence = sess.run([hidden, "sentence_embedding"], feeds)
    for pooling in POOLINGS:
        for normalize in (False, True):
            ours = pool(states, mask, pooling, normalize)
            if np.abs(ours - sentence).max() <= 1e-4 * max(float(np.abs(sentence).max()), 1e-12):
                return pooling, normalize
    return None
