"""Graph surgery on an imported classifier: ``input_ids`` -> ``inputs_embeds``, the head's input exposed as ``features``.

- The word-embedding lookup is the ``Gather`` of a 2-d constant table by ``input_ids``; its output becomes the graph
  input ``inputs_embeds`` and the table becomes the bundle's embeddings. Position and token-type embeddings stay in
  the graph. Any other use of ``input_ids`` (shape computations, RoBERTa's position ids counted from non-pad ids)
  reads a stand-in of the same shape filled with a non-pad id: positions then run 0.. (offset by the padding index
  where the model has one), as Hugging Face computes them from ``inputs_embeds``.
- The classification head is the final ``Gemm`` (or ``MatMul`` + ``Add``) with constant weights that produces the
  logits; its input is exposed as the output ``features`` and its weights are stored as the bundle's head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportInputError

EMBEDS = "inputs_embeds"
FEATURES = "features"
LOGITS = "logits"
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Surgery:
    """The forward graph ``(inputs_embeds, attention_mask[, token_type_ids]) -> (logits, features)`` and what was cut out."""

    model: onnx.ModelProto
    embeddings: np.ndarray  # (vocab, embedding_dim) float32
    head_weight: np.ndarray | None  # (labels, features), None when the head was not found
    head_bias: np.ndarray | None
    uses_token_type_ids: bool
    head_note: str = ""
    fill_id: int = 0  # the id the stand-in for input_ids holds
    compared_ids: tuple[int, ...] = ()  # ids the graph compares input_ids with (padding indices)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {y: n for n in graph.node for y in n.output if y}


def _constant_value(graph: onnx.GraphProto, name: str, producers: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """The value of an initializer, a Constant, or an Identity/Transpose chain over one; None otherwise."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = producers.get(name)
    if node is None:
        return None
    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    if node.op_type == "Identity":
        return _constant_value(graph, node.input[0], producers)
    if node.op_type == "Transpose":
        v = _constant_value(graph, node.input[0], producers)
        if v is None:
            return None
        perm = [a.ints for a in node.attribute if a.name == "perm"]
        return np.transpose(v, list(perm[0]) if perm else None)
    return None


def _consumers(graph: onnx.GraphProto, name: str) -> list[tuple[onnx.NodeProto, int]]:
    return [(n, i) for n in graph.node for i, x in enumerate(n.input) if x == name]


def _ids_aliases(graph: onnx.GraphProto, ids: str) -> set[str]:
    """input_ids and its plain casts (some exports cast ids to int32 before the lookup)."""
    names = {ids}
    changed = True
    while changed:
        changed = False
        for n in graph.node:
            if n.op_type in ("Cast", "Identity") and n.input and n.input[0] in names and n.output[0] not in names:
                names.add(n.output[0])
                changed = True
    return names


def find_word_embedding(graph: onnx.GraphProto, ids: str = "input_ids") -> tuple[list[onnx.NodeProto], str, np.ndarray]:
    """The Gather of a constant 2-d table by input_ids (the largest, if several): (nodes to remove, the embeddings
    tensor, the float table). A quantised table (``Gather`` of int8 rows then ``DequantizeLinear``, as
    ``quantize_dynamic`` writes it) is dequantised here."""
    producers = _producers(graph)
    aliases = _ids_aliases(graph, ids)
    found: list[tuple[list[onnx.NodeProto], str, np.ndarray]] = []
    for n in graph.node:
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in aliases:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            table = _constant_value(graph, n.input[0], producers)
            if axis != 0 or table is None or table.ndim != 2:
                continue
            if np.issubdtype(table.dtype, np.floating):
                found.append(([n], n.output[0], table))
                continue
            readers = _consumers(graph, n.output[0])
            if len(readers) == 1 and readers[0][0].op_type == "DequantizeLinear" and readers[0][1] == 0:
                dq = readers[0][0]
                scale = _constant_value(graph, dq.input[1], producers)
                zp = _constant_value(graph, dq.input[2], producers) if len(dq.input) > 2 and dq.input[2] else 0
                if scale is not None and zp is not None and np.size(scale) == 1 and np.size(zp) == 1:
                    deq = (table.astype(np.float32) - np.float32(zp)) * np.float32(scale)
                    found.append(([n, dq], dq.output[0], deq))
    if not found:
        raise ExportInputError("no word-embedding lookup found: expected a Gather of a constant (vocab, dim) table by "
                               f"{ids!r} (a fused embedding cannot be cut out)")
    return max(found, key=lambda f: f[2].size)


def _find_head(graph: onnx.GraphProto, logits: str) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(features tensor, W (labels, features), b (labels)) of the linear layer producing ``logits``, if it is one."""
    producers = _producers(graph)
    node = producers.get(logits)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    if node is None:
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0):
            return None
        w = _constant_value(graph, node.input[1], producers)
        if w is None or w.ndim != 2:
            return None
        w = (w if attrs.get("transB", 0) else w.T) * float(attrs.get("alpha", 1.0))
        c = _constant_value(graph, node.input[2], producers) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
        if c is None:
            return None
        scaled = np.broadcast_to(np.asarray(c, dtype=np.float64) * float(attrs.get("beta", 1.0)), (w.shape[0],))
        return node.input[0], w.astype(np.float32), scaled.astype(np.float32)
    if node.op_type == "Add":
        for k in (0, 1):
            mm = producers.get(node.input[k])
            bias = _constant_value(graph, node.input[1 - k], producers)
            if mm is not None and mm.op_type == "MatMul" and bias is not None:
                w = _constant_value(graph, mm.input[1], producers)
                if w is not None and w.ndim == 2 and bias.size == w.shape[1]:
                    return mm.input[0], w.T.astype(np.float32), bias.reshape(-1).astype(np.float32)
    if node.op_type == "MatMul":
        w = _constant_value(graph, node.input[1], producers)
        if w is not None and w.ndim == 2:
            return node.input[0], w.T.astype(np.float32), np.zeros(w.shape[1], np.float32)
    return None


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def cut(model: onnx.ModelProto, *, fill_id: int, logits: str | None = None, head: bool = True) -> Surgery:
    """Apply the surgery to a copy of ``model`` (see the module docstring). ``fill_id``: a non-pad token id.
    ``logits``: the output kept (renamed ``logits``); ``head``: whether to look for a classification head (an
    encoder without one, imported for similarity, keeps its hidden states as ``logits`` for the pooling to read)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    if "input_ids" not in inputs:
        raise ExportInputError(f"the graph has no input 'input_ids' (inputs: {list(inputs)}): not a text classifier export")
    extra = [n for n in inputs if n not in KNOWN_INPUTS and n not in {t.name for t in graph.initializer}]
    if extra:
        raise ExportInputError(f"the graph takes inputs {extra} besides {list(KNOWN_INPUTS)}: not supported")
    outputs = [o.name for o in graph.output]
    if logits is None:
        logits = LOGITS if LOGITS in outputs else (outputs[0] if len(outputs) == 1 else None)
    if logits is None or logits not in outputs:
        raise ExportInputError(f"cannot tell which output holds the logits (outputs: {outputs})")
    lookup, emb_name, table = find_word_embedding(graph)
    dim = int(table.shape[1])
    ids_info = inputs["input_ids"]
    batch, seq = ("batch", "sequence")
    dims = ids_info.type.tensor_type.shape.dim
    if len(dims) == 2:
        batch = dims[0].dim_param or batch
        seq = dims[1].dim_param or seq
    # every reader of the lookup's output reads inputs_embeds instead
    for n, i in _consumers(graph, emb_name):
        n.input[i] = EMBEDS
    for o in graph.output:
        if o.name == emb_name:
            raise ExportInputError("the word embeddings are a graph output: not a classifier")
    for n in lookup:
        graph.node.remove(n)
    # any other use of input_ids reads a stand-in of the same shape filled with an id the graph never compares
    # input_ids with (MPNet counts positions from ids != 1, whatever the tokenizer's pad id)
    stand_in = "input_ids/stand_in"
    uses = _consumers(graph, "input_ids")
    producers = _producers(graph)
    compared: set[int] = set()
    for n, i in uses:
        if n.op_type in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"):
            other = _constant_value(graph, n.input[1 - i], producers)
            if other is not None and other.size == 1:
                compared.add(int(other.reshape(())))
    while fill_id in compared:
        fill_id += 1
    new_nodes: list[onnx.NodeProto] = []
    if uses:
        ids_type = ids_info.type.tensor_type.elem_type
        if _opset(model) >= 15:
            new_nodes.append(helper.make_node("Shape", [EMBEDS], ["input_ids/shape"], start=0, end=2))
        else:
            new_nodes.append(helper.make_node("Shape", [EMBEDS], ["input_ids/full_shape"]))
            graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "input_ids/zero"),
                                      numpy_helper.from_array(np.array([2], np.int64), "input_ids/two")])
            new_nodes.append(helper.make_node("Slice", ["input_ids/full_shape", "input_ids/zero", "input_ids/two"],
                                              ["input_ids/shape"]))
        new_nodes.append(helper.make_node("ConstantOfShape", ["input_ids/shape"], [stand_in],
                                          value=helper.make_tensor("fill", ids_type, [1], [int(fill_id)])))
        for n, i in uses:
            n.input[i] = stand_in
    for k, node in enumerate(new_nodes):
        graph.node.insert(k, node)
    idx = [i for i, x in enumerate(graph.input) if x.name == "input_ids"][0]
    del graph.input[idx]
    graph.input.insert(0, helper.make_tensor_value_info(EMBEDS, TensorProto.FLOAT, [batch, seq, dim]))
    names = [i.name for i in graph.input]
    if "attention_mask" not in names:  # the runtime always sends a mask; an unused input costs nothing
        graph.input.insert(1, helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq]))
    uses_tt = "token_type_ids" in names
    # the table is no longer read by the graph
    _drop_unused_initializers(graph)
    if logits != LOGITS:
        graph.node.append(helper.make_node("Identity", [logits], [LOGITS], name="logits/rename"))
        for o in graph.output:
            if o.name == logits:
                o.name = LOGITS
    found = _find_head(graph, LOGITS) if head else None
    note = ""
    w = bias = None
    if found is not None:
        feats, w, bias = found
        out_info = next(o for o in graph.output if o.name == LOGITS)
        per_token = len(out_info.type.tensor_type.shape.dim) == 3  # a token classifier: (batch, sequence, labels)
        graph.node.append(helper.make_node("Identity", [feats], [FEATURES], name="features/expose"))
        graph.output.append(helper.make_tensor_value_info(
            FEATURES, TensorProto.FLOAT, [batch, seq, int(w.shape[1])] if per_token else [batch, int(w.shape[1])]))
    elif head:
        note = "no linear classification head with constant weights produces the logits"
    keep = [o for o in graph.output if o.name in (LOGITS, FEATURES)]
    del graph.output[:]
    graph.output.extend(keep)
    return Surgery(model, table.astype(np.float32), w, bias, uses_tt, note, int(fill_id), tuple(sorted(compared)))


def _used(graph: onnx.GraphProto) -> set[str]:
    from .autodiff import _outer_names

    return {x for n in graph.node for x in n.input} | {o.name for o in graph.output} | \
        {x for n in graph.node for x in _outer_names(n)}


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = _used(graph)
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # drop Identity/Constant nodes whose outputs nobody reads (the table's own aliases)
    changed = True
    while changed:
        changed = False
        used = _used(graph)
        for n in list(graph.node):
            if n.op_type in ("Identity", "Constant") and all(y not in used for y in n.output):
                graph.node.remove(n)
                changed = True
        used = _used(graph)
        keep = [t for t in graph.initializer if t.name in used]
        if len(keep) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(keep)
