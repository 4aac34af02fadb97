"""Reverse-mode differentiation of an ONNX graph, written as ONNX nodes appended to the forward graph.

:func:`gradient_model` turns a forward graph ``(inputs_embeds, attention_mask[, token_type_ids]) -> logits`` into the
graph the torch exporter writes (:mod:`xai_onnx_exporters.trace`): inputs ``w_logit``, ``w_prob``, ``w_top`` added,
outputs ``logits`` and ``grad = d F / d inputs_embeds`` with

    F = sum(w_logit * logits + w_prob * softmax(logits)) + sum_rows(w_top[:, 0] * logits[k] + w_top[:, 1] * softmax(logits)[k])

for the arg-max class k of each row: of each (row, position) for a token classifier, whose logits and weights carry
a sequence axis, or F = sum(logits) for a similarity graph whose logits are the cosine. The backward nodes read the
forward's tensors (no forward value is computed twice); LayerNormalization is asked for its saved mean and inverse
deviation; products with constant weights read a ``Transpose`` of the weight that onnxruntime folds into a constant
at load, and products of two activations a ``Transpose`` it fuses into the product (FusedMatMul). Only nodes between
``inputs_embeds`` and ``logits`` get adjoints, and any operator on that path without a rule here is refused by name
and node.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportInputError

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
# outputs of these never carry a gradient (integer, boolean or piecewise-constant results)
NON_DIFFERENTIABLE = {"Shape", "Size", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or",
                      "Xor", "ArgMax", "ArgMin", "NonZero", "ConstantOfShape", "Range", "IsNaN", "IsInf", "Sign", "Floor",
                      "Ceil", "Round", "OneHot", "EyeLike", "RandomNormalLike", "RandomUniformLike", "BitShift", "Mod"}
# which inputs of an operator are differentiable (the others are shapes, indices, conditions)
DATA_INPUTS: dict[str, tuple[int, ...]] = {
    "Gather": (0,), "GatherElements": (0,), "Reshape": (0,), "Slice": (0,), "Expand": (0,), "Unsqueeze": (0,),
    "Squeeze": (0,), "Where": (1, 2), "Split": (0,), "ReduceMean": (0,), "ReduceSum": (0,), "Cast": (0,),
    "Flatten": (0,), "Transpose": (0,), "Dropout": (0,), "Identity": (0,), "Softmax": (0,), "LogSoftmax": (0,),
    "LayerNormalization": (0,), "Pow": (0,), "Clip": (0,), "CastLike": (0,),
}
# quantised operators: such a model is imported forward-only
QUANTIZED = {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul",
             "ConvInteger", "QLinearConv", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QGemm",
             "DynamicQuantizeLSTM", "QLinearAdd", "QLinearMul"}


class UnsupportedOperatorError(ExportInputError):
    """An operator on the path from inputs_embeds to logits has no gradient rule here."""


Shape = list[Any] | None  # dims: int, str (symbolic) or None


def _dims_equal(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a == b


class _Builder:
    """Appends nodes and constants with fresh names."""

    def __init__(self, opset: int, shapes: dict[str, Shape], elem_types: dict[str, int]):
        self.opset = opset
        self.shapes = shapes
        self.types = elem_types
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: dict[tuple[bytes, tuple[int, ...], str], str] = {}

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"grad/{hint}_{self._n}"

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.fresh(hint or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0] + "_node", **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.tobytes(), arr.shape, str(arr.dtype))
        if key not in self._consts:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def reduce(self, op_type: str, x: str, axes: Sequence[int] | str, keepdims: int) -> str:
        """ReduceSum/ReduceMean over ``axes`` (a list, or a tensor name), whichever way this opset takes them."""
        takes_input = op_type == "ReduceSum" and self.opset >= 13 or self.opset >= 18
        if isinstance(axes, str):
            return self.op(op_type, [x, axes], keepdims=keepdims, noop_with_empty_axes=1)
        if takes_input:
            return self.op(op_type, [x, self.const(list(axes), np.int64)], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def rank(self, name: str) -> int | None:
        s = self.shapes.get(name)
        return None if s is None else len(s)

    def unbroadcast(self, g: str, x: str, y: str) -> str:
        """Sum ``g`` (the adjoint of ``y``, a broadcast of ``x``) down to ``x``'s shape."""
        sx, sy = self.shapes.get(x), self.shapes.get(y)
        if sx is not None and sy is not None and len(sx) <= len(sy):
            lead = len(sy) - len(sx)
            axes, known = list(range(lead)), True
            for i, dx in enumerate(sx):
                dy = sy[lead + i]
                if _dims_equal(dx, dy):
                    continue
                if dx == 1:
                    axes.append(lead + i)
                else:
                    known = False
                    break
            if known:
                if not axes:
                    return g
                out = g
                inner = [a for a in axes if a >= lead]
                if inner:
                    out = self.reduce("ReduceSum", out, inner, keepdims=1)
                if lead:
                    out = self.reduce("ReduceSum", out, list(range(lead)), keepdims=0)
                return out
        # shapes not known well enough here: find the broadcast axes when the graph runs
        shape_x = self.op("Shape", [x])
        shape_g = self.op("Shape", [g])
        lead_n = self.op("Sub", [self.op("Size", [shape_g]), self.op("Size", [shape_x])])
        lead_axes = self.op("Range", [self.const(0, np.int64), lead_n, self.const(1, np.int64)])
        g1 = self.reduce("ReduceSum", g, lead_axes, keepdims=0)
        differ = self.op("Not", [self.op("Equal", [shape_x, self.op("Shape", [g1])])])
        axes_t = self.op("Reshape", [self.op("NonZero", [differ]), self.const([-1], np.int64)])
        return self.reduce("ReduceSum", g1, axes_t, keepdims=1)


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# ---- gradient rules: (builder, node, output adjoints, which inputs need one) -> input adjoints --------------------
Rule = Callable[[_Builder, onnx.NodeProto, list[str | None], list[bool], dict[str, np.ndarray]], list[str | None]]


def _swap_last(b: _Builder, x: str) -> str:
    r = b.rank(x)
    if r is None or r < 2:
        raise UnsupportedOperatorError(f"MatMul operand {x!r} of unknown or vector rank has no gradient rule here")
    perm = list(range(r - 2)) + [r - 1, r - 2]
    return b.op("Transpose", [x], perm=perm)


def _matmul(b, node, g, need, consts):
    a, w = node.input[0], node.input[1]
    y = node.output[0]
    out: list[str | None] = [None, None]
    if need[0]:
        out[0] = b.unbroadcast(b.op("MatMul", [g[0], _swap_last(b, w)]), a, _matmul_like(b, a, y))
    if need[1]:
        out[1] = b.unbroadcast(b.op("MatMul", [_swap_last(b, a), g[0]]), w, _matmul_like(b, w, y))
    return out


def _matmul_like(b: _Builder, operand: str, y: str) -> str:
    """A name whose recorded shape is ``y``'s batch dims followed by ``operand``'s matrix dims (for unbroadcast)."""
    sy, so = b.shapes.get(y), b.shapes.get(operand)
    if sy is None or so is None:
        return y
    name = b.fresh("shape_of")
    b.shapes[name] = list(sy[:-2]) + list(so[-2:])
    return name


def _gemm(b, node, g, need, consts):
    alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
    ta, tb = int(_attr(node, "transA", 0)), int(_attr(node, "transB", 0))
    a, w = node.input[0], node.input[1]
    out: list[str | None] = [None] * len(node.input)
    if need[0]:  # dA = g @ op(B)^T, transposed back when transA
        da = b.op("Gemm", [g[0], w], transB=1 - tb) if not ta else b.op("Gemm", [w, g[0]], transA=tb, transB=1)
        out[0] = da if alpha == 1.0 else b.op("Mul", [da, b.const(alpha)])
    if need[1]:  # dB = op(A)^T @ g, transposed back when transB
        db = b.op("Gemm", [a, g[0]], transA=1 - ta) if not tb else b.op("Gemm", [g[0], a], transA=1, transB=ta)
        out[1] = db if alpha == 1.0 else b.op("Mul", [db, b.const(alpha)])
    if len(node.input) > 2 and need[2]:
        gc = g[0] if beta == 1.0 else b.op("Mul", [g[0], b.const(beta)])
        out[2] = b.unbroadcast(gc, node.input[2], node.output[0])
    return out


def _add(b, node, g, need, consts):
    y = node.output[0]
    return [b.unbroadcast(g[0], x, y) if n else None for x, n in zip(node.input, need)]


def _sub(b, node, g, need, consts):
    y = node.output[0]
    return [b.unbroadcast(g[0], node.input[0], y) if need[0] else None,
            b.unbroadcast(b.op("Neg", [g[0]]), node.input[1], y) if need[1] else None]


def _mul(b, node, g, need, consts):
    x0, x1 = node.input[0], node.input[1]
    y = node.output[0]
    return [b.unbroadcast(b.op("Mul", [g[0], x1]), x0, y) if need[0] else None,
            b.unbroadcast(b.op("Mul", [g[0], x0]), x1, y) if need[1] else None]


def _div(b, node, g, need, consts):
    x0, x1 = node.input[0], node.input[1]
    y = node.output[0]
    return [b.unbroadcast(b.op("Div", [g[0], x1]), x0, y) if need[0] else None,
            b.unbroadcast(b.op("Neg", [b.op("Div", [b.op("Mul", [g[0], y]), x1])]), x1, y) if need[1] else None]


def _pow(b, node, g, need, consts):
    x, e = node.input[0], node.input[1]
    if e in consts and consts[e].size == 1:
        ev = float(consts[e].reshape(()))
        if ev == 2.0:
            return [b.op("Mul", [g[0], b.op("Mul", [x, b.const(2.0)])]), None]
        if ev == 1.0:
            return [g[0], None]
        d = b.op("Mul", [b.op("Pow", [x, b.const(ev - 1.0)]), b.const(ev)])
        return [b.op("Mul", [g[0], d]), None]
    em1 = b.op("Sub", [e, b.op("CastLike", [b.const(1.0), e]) if b.opset >= 15 else b.const(1.0)])
    return [b.unbroadcast(b.op("Mul", [g[0], b.op("Mul", [e, b.op("Pow", [x, em1])])]), x, node.output[0]), None]


def _unary(fn: Callable[[_Builder, str, str, str], str]) -> Rule:
    def rule(b, node, g, need, consts):
        return [fn(b, g[0], node.input[0], node.output[0])] + [None] * (len(node.input) - 1)
    return rule


def _erf(b: _Builder, g: str, x: str, y: str) -> str:
    e = b.op("Exp", [b.op("Neg", [b.op("Mul", [x, x])])])
    return b.op("Mul", [g, b.op("Mul", [e, b.const(2.0 / math.sqrt(math.pi))])])


def _gelu_rule(b, node, g, need, consts):
    x = node.input[0]
    if _attr(node, "approximate", b"none") in (b"tanh", "tanh"):
        c = math.sqrt(2.0 / math.pi)
        x3 = b.op("Mul", [b.op("Mul", [x, x]), x])
        inner = b.op("Mul", [b.op("Add", [x, b.op("Mul", [x3, b.const(0.044715)])]), b.const(c)])
        t = b.op("Tanh", [inner])
        sech2 = b.op("Sub", [b.const(1.0), b.op("Mul", [t, t])])
        dinner = b.op("Mul", [b.op("Add", [b.const(1.0), b.op("Mul", [b.op("Mul", [x, x]), b.const(3 * 0.044715)])]), b.const(c)])
        d = b.op("Add", [b.op("Mul", [b.op("Add", [t, b.const(1.0)]), b.const(0.5)]),
                         b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), b.op("Mul", [sech2, dinner])])])
    else:
        cdf = b.op("Mul", [b.op("Add", [b.op("Erf", [b.op("Mul", [x, b.const(1 / math.sqrt(2.0))])]), b.const(1.0)]), b.const(0.5)])
        pdf = b.op("Mul", [b.op("Exp", [b.op("Mul", [b.op("Mul", [x, x]), b.const(-0.5)])]), b.const(1 / math.sqrt(2 * math.pi))])
        d = b.op("Add", [cdf, b.op("Mul", [x, pdf])])
    return [b.op("Mul", [g[0], d])]


def _softmax(b, node, g, need, consts):
    y = node.output[0]
    axis = int(_attr(node, "axis", -1 if b.opset >= 13 else 1))
    r = b.rank(y)
    if b.opset < 13 and not (axis == -1 or (r is not None and axis == r - 1)):
        raise UnsupportedOperatorError(f"Softmax node {node.name!r} flattens from axis {axis} (opset {b.opset}): no gradient rule")
    gy = b.op("Mul", [g[0], y])
    s = b.reduce("ReduceSum", gy, [axis], keepdims=1)
    return [b.op("Sub", [gy, b.op("Mul", [y, s])])]


def _log_softmax(b, node, g, need, consts):
    y = node.output[0]
    axis = int(_attr(node, "axis", -1 if b.opset >= 13 else 1))
    s = b.reduce("ReduceSum", g[0], [axis], keepdims=1)
    return [b.op("Sub", [g[0], b.op("Mul", [b.op("Exp", [y]), s])])]


def _layer_norm(b, node, g, need, consts):
    x = node.input[0]
    mean, inv_std = node.output[1], node.output[2]  # filled in by _ask_layer_norm_statistics
    axis = int(_attr(node, "axis", -1))
    r = b.rank(x)
    if axis < 0:
        if axis == -1:
            axes = [-1]
        elif r is None:
            raise UnsupportedOperatorError(f"LayerNormalization node {node.name!r}: axis {axis} on an input of unknown rank")
        else:
            axes = list(range(r + axis, r))
    else:
        if r is None:
            raise UnsupportedOperatorError(f"LayerNormalization node {node.name!r}: axis {axis} on an input of unknown rank")
        axes = list(range(axis, r))
    xhat = b.op("Mul", [b.op("Sub", [x, mean]), inv_std])
    gs = b.op("Mul", [g[0], node.input[1]])
    m1 = b.reduce("ReduceMean", gs, axes, keepdims=1)
    m2 = b.reduce("ReduceMean", b.op("Mul", [gs, xhat]), axes, keepdims=1)
    dx = b.op("Mul", [b.op("Sub", [b.op("Sub", [gs, m1]), b.op("Mul", [xhat, m2])]), inv_std])
    return [dx] + [None] * (len(node.input) - 1)


def _reduce_axes(b: _Builder, node: onnx.NodeProto) -> list[int] | str | None:
    if len(node.input) > 1 and node.input[1]:
        return node.input[1]
    axes = _attr(node, "axes")
    return list(axes) if axes is not None else None


def _reduce(mean: bool) -> Rule:
    def rule(b, node, g, need, consts):
        x, y = node.input[0], node.output[0]
        keep = int(_attr(node, "keepdims", 1))
        axes = _reduce_axes(b, node)
        gk = g[0]
        if not keep and axes is not None:
            gk = b.op("Unsqueeze", [gk, axes if isinstance(axes, str) else b.const(axes, np.int64)]) if b.opset >= 13 \
                else b.op("Unsqueeze", [gk], axes=axes)
        dx = b.op("Expand", [gk, b.op("Shape", [x])])
        if mean:
            n = b.op("Div", [b.op("Cast", [b.op("Size", [x])], to=TensorProto.FLOAT),
                             b.op("Cast", [b.op("Size", [y])], to=TensorProto.FLOAT)])
            dx = b.op("Div", [dx, n])
        return [dx] + [None] * (len(node.input) - 1)
    return rule


def _reshape_back(b, node, g, need, consts):
    return [b.op("Reshape", [g[0], b.op("Shape", [node.input[0]])])] + [None] * (len(node.input) - 1)


def _transpose(b, node, g, need, consts):
    perm = _attr(node, "perm")
    if perm is None:
        return [b.op("Transpose", [g[0]])]
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return [b.op("Transpose", [g[0]], perm=inv)]


def _identity(b, node, g, need, consts):
    return [g[0]] + [None] * (len(node.input) - 1)


def _cast(b, node, g, need, consts):
    t = b.types.get(node.input[0])
    if t is None or t not in FLOAT_TYPES:
        return [None]
    return [g[0] if t == b.types.get(node.output[0]) else b.op("Cast", [g[0]], to=t)]


def _expand(b, node, g, need, consts):
    return [b.unbroadcast(g[0], node.input[0], node.output[0]), None]


def _where(b, node, g, need, consts):
    c, x0, x1 = node.input
    y = node.output[0]
    zero = b.op("CastLike", [b.const(0.0), g[0]]) if b.opset >= 15 else b.const(0.0)
    return [None,
            b.unbroadcast(b.op("Where", [c, g[0], zero]), x0, y) if need[1] else None,
            b.unbroadcast(b.op("Where", [c, zero, g[0]]), x1, y) if need[2] else None]


def _gather(b, node, g, need, consts):
    data, idx = node.input[0], node.input[1]
    axis = int(_attr(node, "axis", 0))
    r = b.rank(data)
    if r is None:
        raise UnsupportedOperatorError(f"Gather node {node.name!r} on a tensor of unknown rank has no gradient rule here")
    axis = axis % r
    ir = b.rank(idx)
    if ir == 0:
        # one position k along the axis: dX = g placed at k, zeros elsewhere (a one-hot mask, broadcast)
        dim = b.op("Gather", [b.op("Shape", [data]), b.const(axis, np.int64)])
        k = b.op("Mod", [b.op("Add", [idx if b.types.get(idx) == TensorProto.INT64 else b.op("Cast", [idx], to=TensorProto.INT64),
                                      dim]), dim])
        pos = b.op("Range", [b.const(0, np.int64), dim, b.const(1, np.int64)])
        hot = b.op("Cast", [b.op("Equal", [pos, k])], to=b.types.get(data, TensorProto.FLOAT))
        hot = b.op("Reshape", [hot, b.const([-1] + [1] * (r - 1 - axis), np.int64)])
        gu = b.op("Unsqueeze", [g[0], b.const([axis], np.int64)]) if b.opset >= 13 else b.op("Unsqueeze", [g[0]], axes=[axis])
        return [b.op("Mul", [gu, hot]), None]
    if ir == 1 and b.opset >= 16:
        zeros = b.op("ConstantOfShape", [b.op("Shape", [data])], value=helper.make_tensor("v", b.types.get(data, 1), [1], [0]))
        ix = b.op("Reshape", [idx if b.types.get(idx) == TensorProto.INT64 else b.op("Cast", [idx], to=TensorProto.INT64),
                              b.const([-1] + [1] * (r - 1 - axis), np.int64)])
        ix = b.op("Expand", [ix, b.op("Shape", [g[0]])])
        return [b.op("ScatterElements", [zeros, ix, g[0]], axis=axis, reduction="add"), None]
    raise UnsupportedOperatorError(f"Gather node {node.name!r} with {ir}-d indices on a differentiated tensor: no gradient rule here")


def _gather_elements(b, node, g, need, consts):
    if b.opset < 16:
        raise UnsupportedOperatorError(f"GatherElements node {node.name!r}: its gradient needs opset 16+ (ScatterElements add)")
    data = node.input[0]
    zeros = b.op("ConstantOfShape", [b.op("Shape", [data])], value=helper.make_tensor("v", b.types.get(data, 1), [1], [0]))
    return [b.op("ScatterElements", [zeros, node.input[1], g[0]], axis=int(_attr(node, "axis", 0)), reduction="add"), None]


def _slice(b, node, g, need, consts):
    """The adjoint of a slice, for any starts, ends, axes and steps: the flat positions the slice read, scattered into."""
    x = node.input[0]
    shape = b.op("Shape", [x])
    size = b.op("Size", [x])
    flat = b.op("Range", [b.const(0, np.int64), size, b.const(1, np.int64)])
    pos = b.op("Slice", [b.op("Reshape", [flat, shape])] + list(node.input[1:]))
    pos = b.op("Reshape", [pos, b.const([-1], np.int64)])
    zeros = b.op("ConstantOfShape", [b.op("Reshape", [size, b.const([1], np.int64)])],
                 value=helper.make_tensor("v", b.types.get(x, 1), [1], [0]))
    gf = b.op("Reshape", [g[0], b.const([-1], np.int64)])
    dx = b.op("ScatterElements", [zeros, pos, gf], axis=0)
    return [b.op("Reshape", [dx, shape])] + [None] * (len(node.input) - 1)


def _concat(b, node, g, need, consts):
    axis = int(_attr(node, "axis"))
    sizes = [b.op("Reshape", [b.op("Gather", [b.op("Shape", [x]), b.const(axis, np.int64)]), b.const([1], np.int64)])
             for x in node.input]
    if len(node.input) == 1:
        return [g[0]]
    parts = b.op("Split", [g[0], b.op("Concat", sizes, axis=0)], n_out=len(node.input), axis=axis)
    return [p if n else None for p, n in zip(parts, need)]


def _split(b, node, g, need, consts):
    axis = int(_attr(node, "axis", 0))
    parts = []
    for y, gy in zip(node.output, g):
        if gy is None:
            gy = b.op("ConstantOfShape", [b.op("Shape", [y])], value=helper.make_tensor("v", b.types.get(y, 1), [1], [0]))
        parts.append(gy)
    return [b.op("Concat", parts, axis=axis)] + [None] * (len(node.input) - 1)


def _clip(b, node, g, need, consts):
    x = node.input[0]
    keep = None
    if len(node.input) > 1 and node.input[1]:
        keep = b.op("GreaterOrEqual", [x, node.input[1]])
    if len(node.input) > 2 and node.input[2]:
        le = b.op("LessOrEqual", [x, node.input[2]])
        keep = le if keep is None else b.op("And", [keep, le])
    if keep is None:
        return [g[0]] + [None] * (len(node.input) - 1)
    zero = b.op("CastLike", [b.const(0.0), g[0]])
    return [b.op("Where", [keep, g[0], zero])] + [None] * (len(node.input) - 1)


def _max_min(b, node, g, need, consts):
    y = node.output[0]
    zero = b.op("CastLike", [b.const(0.0), g[0]])
    return [b.unbroadcast(b.op("Where", [b.op("Equal", [x, y]), g[0], zero]), x, y) if n else None
            for x, n in zip(node.input, need)]


RULES: dict[str, Rule] = {
    "MatMul": _matmul, "Gemm": _gemm, "Add": _add, "Sum": _add, "Sub": _sub, "Mul": _mul, "Div": _div, "Pow": _pow,
    "Sqrt": _unary(lambda b, g, x, y: b.op("Div", [b.op("Mul", [g, b.const(0.5)]), y])),
    "Reciprocal": _unary(lambda b, g, x, y: b.op("Neg", [b.op("Mul", [g, b.op("Mul", [y, y])])])),
    "Neg": _unary(lambda b, g, x, y: b.op("Neg", [g])),
    "Exp": _unary(lambda b, g, x, y: b.op("Mul", [g, y])),
    "Log": _unary(lambda b, g, x, y: b.op("Div", [g, x])),
    "Tanh": _unary(lambda b, g, x, y: b.op("Mul", [g, b.op("Sub", [b.const(1.0), b.op("Mul", [y, y])])])),
    "Sigmoid": _unary(lambda b, g, x, y: b.op("Mul", [g, b.op("Mul", [y, b.op("Sub", [b.const(1.0), y])])])),
    "Relu": _unary(lambda b, g, x, y: b.op("Mul", [g, b.op("Cast", [b.op("Greater", [x, b.const(0.0)])], to=TensorProto.FLOAT)])),
    "Abs": _unary(lambda b, g, x, y: b.op("Mul", [g, b.op("Sign", [x])])),
    "Erf": _unary(_erf), "Gelu": _gelu_rule,
    "Softmax": _softmax, "LogSoftmax": _log_softmax, "LayerNormalization": _layer_norm,
    "ReduceMean": _reduce(True), "ReduceSum": _reduce(False),
    "Reshape": _reshape_back, "Flatten": _reshape_back, "Squeeze": _reshape_back, "Unsqueeze": _reshape_back,
    "Transpose": _transpose, "Identity": _identity, "Dropout": _identity, "Cast": _cast, "CastLike": _cast,
    "Expand": _expand, "Where": _where, "Gather": _gather, "GatherElements": _gather_elements, "Slice": _slice,
    "Concat": _concat, "Split": _split, "Clip": _clip, "Max": _max_min, "Min": _max_min,
}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values (small ones: used to read exponents)."""
    out: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if int(np.prod(init.dims)) <= 16:
            out[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arr = numpy_helper.to_array(node.attribute[0].t)
            if arr.size <= 16:
                out[node.output[0]] = arr
    return out


def infer_shapes(model: onnx.ModelProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """Static shapes (int, symbolic name or None per dim) and element types of every tensor that can be inferred.

    onnxruntime's symbolic inference first: it keeps ``batch_size`` and ``sequence_length`` through the reshapes of
    attention, where onnx's own inference invents a new name per tensor (and every broadcast there would then be
    resolved at run time, 10 small nodes each: 19 of them in minilm-sst2's graph)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - its failures are many and untyped; onnx's inference is the fallback
        inferred = None
    if inferred is None:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        types[vi.name] = t.elem_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def check_differentiable(model: onnx.ModelProto, wrt: str, output: str) -> list[str]:
    """Quantised operators of the model (empty: differentiable as far as quantisation goes)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED})


def _active_nodes(graph: onnx.GraphProto, wrt: str, output: str, types: dict[str, int]) -> tuple[list[int], set[str]]:
    """Indices of nodes between ``wrt`` and ``output`` through differentiable edges, and the tensors they carry."""
    active = {wrt}
    for node in graph.node:
        if node.op_type in NON_DIFFERENTIABLE:
            continue
        data = DATA_INPUTS.get(node.op_type)
        ins = [x for i, x in enumerate(node.input) if x and (data is None or i in data)]
        if any(x in active for x in ins):
            for y in node.output:
                if y and types.get(y, TensorProto.FLOAT) in FLOAT_TYPES:
                    active.add(y)
    needed = {output}
    path: list[int] = []
    for i in range(len(graph.node) - 1, -1, -1):
        node = graph.node[i]
        if any(y in needed and y in active for y in node.output) and node.op_type not in NON_DIFFERENTIABLE:
            data = DATA_INPUTS.get(node.op_type)
            ins = [x for j, x in enumerate(node.input) if x and (data is None or j in data) and x in active]
            if ins:
                path.append(i)
                needed.update(ins)
    if wrt not in needed:
        raise ExportInputError(f"{output!r} does not depend on {wrt!r} through differentiable operators")
    return path[::-1], active & needed


def _ask_layer_norm_statistics(graph: onnx.GraphProto, path: list[int]) -> None:
    for i in path:
        node = graph.node[i]
        if node.op_type == "LayerNormalization":
            while len(node.output) < 3:
                node.output.append("")
            for k, hint in ((1, "mean"), (2, "inv_std")):
                if not node.output[k]:
                    node.output[k] = f"{node.output[0]}/{hint}"


def _objective_seed(b: _Builder, logits: str) -> str:
    """d F / d logits for the weights w_logit, w_prob (batch[, sequence], labels) and w_top (batch[, sequence], 2)
    (module docstring)."""
    probs = b.op("Softmax", [logits], axis=-1)
    top_idx = b.op("ArgMax", [logits], axis=-1, keepdims=0)
    depth = b.op("Gather", [b.op("Shape", [logits]), b.const(-1, np.int64)])
    top = b.op("OneHot", [top_idx, depth, b.const([0.0, 1.0])], axis=-1)
    last = b.const([-1], np.int64)  # (batch, 2) for a sequence classifier, (batch, sequence, 2) for a token one
    w_top_logit = b.op("Slice", ["w_top", b.const([0], np.int64), b.const([1], np.int64), last])
    w_top_prob = b.op("Slice", ["w_top", b.const([1], np.int64), b.const([2], np.int64), last])
    on_logit = b.op("Add", ["w_logit", b.op("Mul", [top, w_top_logit])])
    on_prob = b.op("Add", ["w_prob", b.op("Mul", [top, w_top_prob])])
    weighted = b.op("Mul", [on_prob, probs])
    through_softmax = b.op("Sub", [weighted, b.op("Mul", [probs, b.reduce("ReduceSum", weighted, [-1], keepdims=1)])])
    return b.op("Add", [on_logit, through_softmax], hint="d_logits")


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers no output needs."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(y in needed for y in node.output if y):
            keep.append(node)
            needed.update(x for x in node.input if x)
            needed.update(_outer_names(node))
    kept_inits = [t for t in graph.initializer if t.name in needed]
    del graph.node[:]
    graph.node.extend(reversed(keep))
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Every name a node's subgraphs (If, Loop branches) read, outer-scope names among them."""
    names: set[str] = set()
    for a in node.attribute:
        subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
        for g in subs:
            for n in g.node:
                names.update(x for x in n.input if x)
                names.update(_outer_names(n))
    return names


def gradient_model(forward: onnx.ModelProto, *, wrt: str = "inputs_embeds", logits: str = "logits",
                   grad_name: str = "grad", objective: str = "classification") -> onnx.ModelProto:
    """The gradient graph of ``forward`` (see the module docstring); ``forward`` is not modified.

    ``objective``: ``classification`` (the weights w_logit, w_prob, w_top in, one row per position where ``logits``
    has a sequence axis) or ``sum`` (F = the sum of ``logits``: a similarity graph whose logits are the cosine)."""
    if objective not in ("classification", "sum"):
        raise ValueError(f"objective {objective!r}")
    model = copy.deepcopy(forward)
    graph = model.graph
    quantized = check_differentiable(model, wrt, logits)
    if quantized:
        raise UnsupportedOperatorError(f"the model holds quantised operators ({', '.join(quantized)}): it has no gradient; "
                                       "import it forward-only (occlusion, fd and model-agnostic methods)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    shapes, types = infer_shapes(model)
    path, _ = _active_nodes(graph, wrt, logits, types)
    _ask_layer_norm_statistics(graph, path)
    b = _Builder(opset, shapes, types)
    consts = _constants(graph)
    logits_shape = shapes.get(logits) or [None, None]
    if objective == "sum":
        seed = b.op("ConstantOfShape", [b.op("Shape", [logits])], value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    else:
        lead = [d or n for d, n in zip(logits_shape[:-1], ("batch", "sequence"))]
        for name, width in (("w_logit", None), ("w_prob", None), ("w_top", 2)):
            labels_dim = width if width is not None else logits_shape[-1]
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [*lead, labels_dim or "labels"]))
        seed = _objective_seed(b, logits)
    adjoints: dict[str, list[str]] = {logits: [seed]}

    def total(name: str) -> str | None:
        parts = adjoints.get(name)
        if not parts:
            return None
        acc = parts[0]
        for p in parts[1:]:
            acc = b.op("Add", [acc, p], hint="acc")
        adjoints[name] = [acc]
        return acc

    on_path = {wrt} | {y for i in path for y in graph.node[i].output if y}  # tensors that depend on wrt
    for i in reversed(path):
        node = graph.node[i]
        rule = RULES.get(node.op_type)
        if rule is None or node.domain not in ("", "ai.onnx"):
            raise UnsupportedOperatorError(
                f"operator {node.domain + '.' if node.domain else ''}{node.op_type} (node {node.name!r}) lies between "
                f"{wrt} and {logits} and has no gradient rule here: import the model with --no-gradient, or export it "
                "with `xai-onnx export` from its checkpoint")
        g_out = [total(y) if y else None for y in node.output]
        if all(x is None for x in g_out):
            continue
        if node.op_type not in ("Split",):
            if g_out[0] is None:
                continue
        data = DATA_INPUTS.get(node.op_type)
        need = [bool(x) and x in on_path and (data is None or j in data) for j, x in enumerate(node.input)]
        grads = rule(b, node, g_out, need, consts)
        for x, gx, n in zip(node.input, grads, need):
            if n and gx is not None:
                adjoints.setdefault(x, []).append(gx)
    grad = total(wrt)
    if grad is None:
        raise ExportInputError(f"no gradient reached {wrt!r}")
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    graph.node.append(helper.make_node("Identity", [grad], [grad_name], name="grad/output"))
    out_logits = next(o for o in graph.output if o.name == logits)
    del graph.output[:]
    graph.output.extend([out_logits, helper.make_tensor_value_info(grad_name, TensorProto.FLOAT,
                                                                   (shapes.get(wrt) or [None, None, None]))])
    _prune(graph)
    return model
