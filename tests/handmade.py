"""A bundle written by hand (no exporter, no torch): a linear bag-of-embeddings classifier with known answers.

logits = W @ mean_i(m_i * x_i) + c, so for the logit output every attribution method has a closed form:
IG_i = occlusion_i = fd_i = (x_i - b_i) . W[t] / n and saliency_i = |W[t]| / n, where n = number of real tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from xai_onnx.manifest import SCHEMA_VERSION, GraphSpec, Manifest, SpecialToken

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "the", "very", "not", "fun", "dull", "a"]
LABELS = ("negative", "neutral", "positive")


def _tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def _pooled(nodes: list) -> str:
    """mean over real tokens: pooled (batch, dim)."""
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis_last"], ["m3"]),
        helper.make_node("Mul", ["inputs_embeds", "m3"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axis1"], ["sx"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "axis1"], ["n"], keepdims=1),
        helper.make_node("Div", ["sx", "n"], ["pooled"]),
    ]
    return "pooled"


def build(directory: Path, dim: int = 4, seed: int = 0, gradient: bool = True, max_length: int = 16,
          top: bool = True) -> dict:
    """top: the gradient graph takes ``w_top`` (weights of the arg-max class), as exported bundles do; False
    builds one like those exported before it existed."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    emb = rng.normal(size=(len(VOCAB), dim)).astype(np.float32)
    W = rng.normal(size=(len(LABELS), dim)).astype(np.float32)
    c = rng.normal(size=(len(LABELS),)).astype(np.float32)
    inits = [numpy_helper.from_array(W.T.copy(), "Wt"), numpy_helper.from_array(W, "W"), numpy_helper.from_array(c, "c"),
             numpy_helper.from_array(np.array([-1], np.int64), "axis_last"), numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(len(LABELS), np.int64), "n_labels"),
             numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "off_on"),
             numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1")]
    inputs = [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "seq", dim]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])]
    nodes: list = []
    _pooled(nodes)
    nodes += [helper.make_node("MatMul", ["pooled", "Wt"], ["z0"]), helper.make_node("Add", ["z0", "c"], ["logits"])]
    fwd = helper.make_graph(nodes + [helper.make_node("Identity", ["pooled"], ["features"])], "fwd", inputs, [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])], inits)
    onnx.save(helper.make_model(fwd, opset_imports=[helper.make_opsetid("", 18)]), directory / "forward.onnx")
    if gradient:
        # wl = w_logit + onehot(argmax) * w_top[:, 0], wpr = w_prob + onehot(argmax) * w_top[:, 1]
        # g_z = wl + p * (wpr - sum(wpr * p)); grad_i = m_i / n * (g_z @ W)
        gnodes = list(nodes)
        if top:
            gnodes += [
                helper.make_node("ArgMax", ["logits"], ["am"], axis=-1, keepdims=0),
                helper.make_node("OneHot", ["am", "n_labels", "off_on"], ["onehot"], axis=-1),
                helper.make_node("Gather", ["w_top", "i0"], ["wt0"], axis=1),
                helper.make_node("Gather", ["w_top", "i1"], ["wt1"], axis=1),
                helper.make_node("Unsqueeze", ["wt0", "axis_last"], ["wt0c"]),
                helper.make_node("Unsqueeze", ["wt1", "axis_last"], ["wt1c"]),
                helper.make_node("Mul", ["onehot", "wt0c"], ["tl"]),
                helper.make_node("Mul", ["onehot", "wt1c"], ["tp"]),
                helper.make_node("Add", ["w_logit", "tl"], ["wl"]),
                helper.make_node("Add", ["w_prob", "tp"], ["wpr"]),
            ]
        else:
            gnodes += [helper.make_node("Identity", ["w_logit"], ["wl"]), helper.make_node("Identity", ["w_prob"], ["wpr"])]
        gnodes += [
            helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
            helper.make_node("Mul", ["wpr", "p"], ["wp"]),
            helper.make_node("ReduceSum", ["wp", "axis_last"], ["swp"], keepdims=1),
            helper.make_node("Sub", ["wpr", "swp"], ["d"]),
            helper.make_node("Mul", ["p", "d"], ["pd"]),
            helper.make_node("Add", ["wl", "pd"], ["gz"]),
            helper.make_node("MatMul", ["gz", "W"], ["gp"]),  # (batch, dim)
            helper.make_node("Div", ["gp", "n"], ["gpn"]),
            helper.make_node("Unsqueeze", ["gpn", "axis1"], ["gp3"]),
            helper.make_node("Mul", ["gp3", "m3"], ["grad"]),
        ]
        ginputs = inputs + [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", len(LABELS)]) for n in ("w_logit", "w_prob")]
        if top:
            ginputs.append(helper.make_tensor_value_info("w_top", TensorProto.FLOAT, ["batch", 2]))
        g = helper.make_graph(gnodes, "grad", ginputs, [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
            helper.make_tensor_value_info("grad", TensorProto.FLOAT, ["batch", "seq", dim])], inits)
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), directory / "gradient.onnx")
    np.save(directory / "embeddings.npy", emb)
    np.savez(directory / "head.npz", W=W, b=c, labels=np.array(LABELS))
    (directory / "weights.bin").write_bytes(b"")
    (directory / "tokenizer.json").write_text(_tokenizer().to_str(), encoding="utf-8")
    io = {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask"}
    Manifest(
        schema_version=SCHEMA_VERSION, source_kind="handmade", model_type="linear-bag", architecture="MeanPoolLinear",
        labels=LABELS, special_tokens={r: SpecialToken(t, VOCAB.index(t)) for r, t in
                                       [("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("mask", "[MASK]")]},
        max_length=max_length, embedding_dim=dim, feature_dim=dim, vocab_size=len(VOCAB), uses_token_type_ids=False,
        opset=18, tokenizer_file="tokenizer.json", embeddings_file="embeddings.npy", head_file="head.npz",
        weights_file="weights.bin", forward=GraphSpec("forward.onnx", io, {"logits": "logits", "features": "features"}),
        gradient=GraphSpec("gradient.onnx", {**io, "w_logit": "w_logit", "w_prob": "w_prob", **({"w_top": "w_top"} if top else {})},
                           {"logits": "logits", "grad": "grad"}) if gradient else None,
    ).save(directory)
    return {"E": emb, "W": W, "c": c, "vocab": VOCAB, "labels": LABELS}


def build_with_pairs(directory: Path, **kwargs) -> dict:
    """:func:`build` with a tokenizer that takes sentence pairs: ``[CLS] A [SEP] B [SEP]`` (the second text's type
    id 1, which this bag-of-embeddings model ignores)."""
    params = build(directory, **kwargs)
    tok = _tokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    (directory / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    return params


def reference_logits(params: dict, ids: list[int]) -> np.ndarray:
    x = params["E"][ids].astype(np.float64)
    return params["W"].astype(np.float64) @ x.mean(0) + params["c"]
