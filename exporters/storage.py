"""Write several ONNX graphs whose weights are stored once, in one shared external-data file.

The gradient graph holds each weight matrix both as W and as its transpose (forward and backward). On disk each
distinct tensor is written once; a transposed copy becomes a ``Transpose`` node on the stored one, which
onnxruntime folds back into a constant when the session loads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

INLINE_BYTES = 1024  # smaller tensors stay in the graph file
ALIGN = 64


def _key(arr: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    a = np.ascontiguousarray(arr)
    return (hashlib.sha256(a.tobytes()).hexdigest(), tuple(a.shape), str(a.dtype))


def _external(name: str, arr: np.ndarray, location: str, offset: int, length: int) -> onnx.TensorProto:
    t = onnx.TensorProto()
    t.name = name
    t.dims.extend(arr.shape)
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = k, v
    return t


def save_with_shared_weights(models: dict[str, onnx.ModelProto], directory: Path, weights_file: str) -> dict[str, int]:
    """Save each model as ``directory/<name>`` with large initializers in ``directory/weights_file``.

    Returns byte counts: ``stored`` (written once), ``referenced`` (what the graphs would hold without sharing).
    """
    stored: dict[tuple[str, tuple[int, ...], str], tuple[int, int]] = {}
    referenced = 0
    with open(directory / weights_file, "wb") as out:

        def store(arr: np.ndarray) -> tuple[int, int]:
            key = _key(arr)
            if key not in stored:
                pad = (-out.tell()) % ALIGN
                out.write(b"\0" * pad)
                offset = out.tell()
                data = np.ascontiguousarray(arr).tobytes()
                out.write(data)
                stored[key] = (offset, len(data))
            return stored[key]

        for file_name, model in models.items():
            graph = model.graph
            kept: list[onnx.TensorProto] = []
            transposes: list[onnx.NodeProto] = []
            for init in graph.initializer:
                arr = numpy_helper.to_array(init)
                if arr.nbytes < INLINE_BYTES:
                    kept.append(init)
                    continue
                referenced += arr.nbytes
                if arr.ndim == 2 and _key(arr) not in stored and _key(arr.T) in stored:
                    base = init.name + "__transposed"
                    offset, length = stored[_key(arr.T)]
                    kept.append(_external(base, np.ascontiguousarray(arr.T), weights_file, offset, length))
                    transposes.append(helper.make_node("Transpose", [base], [init.name], perm=[1, 0]))
                    continue
                offset, length = store(arr)
                kept.append(_external(init.name, arr, weights_file, offset, length))
            del graph.initializer[:]
            graph.initializer.extend(kept)
            for node in reversed(transposes):
                graph.node.insert(0, node)
            onnx.save(model, str(directory / file_name))
    total = sum(length for _, length in stored.values())
    return {"stored": total, "referenced": referenced}
