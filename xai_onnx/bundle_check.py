"""A bundle checked at load against what it holds: the manifest against its own files, the tokenizer, the
embedding table and the graphs' real inputs and outputs.

Order as in optimum's export validation: names, then shapes, then values (one tiny run of each graph). Each
disagreement is one :class:`~xai_onnx.errors.BundleError` line that says what disagrees with what.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BundleError

if TYPE_CHECKING:
    import onnxruntime as ort

    from .manifest import GraphSpec, Manifest
    from .tokenization import TextEncoder

EMBEDDING_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
_FEED_TYPES = {"inputs_embeds": "tensor(float)", "attention_mask": "tensor(int64)", "token_type_ids": "tensor(int64)"}
_OUTPUT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")
_TEXT_ROLES = ("inputs_embeds", "attention_mask", "token_type_ids")
_FIX = "re-export the bundle"


def bundle_file(directory: Path, name: Any, field: str) -> Path:
    """``directory / name`` for a file the manifest names, refused unless it stays inside the bundle directory: no
    absolute path, no ``..``, no symbolic link that leads out."""
    if not isinstance(name, str) or not name.strip():
        raise BundleError(f"manifest {field} is {name!r}, not a file name: {_FIX}")
    pure = PurePath(name)
    if pure.is_absolute() or pure.drive or ".." in pure.parts:
        raise BundleError(f"manifest {field} {name!r} points outside the bundle directory: a bundle names only files "
                          f"inside it; {_FIX}")
    path = directory / name
    root = directory.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise BundleError(f"manifest {field} {name!r} is a link to {real}, outside the bundle directory: a bundle "
                          f"names only files inside it; {_FIX}")
    return path


def check_files(manifest: Manifest, directory: Path) -> None:
    """Every file the manifest names stays inside ``directory``; those the runtime reads at load exist; the
    manifest's own numbers make sense (:func:`check_numbers`)."""
    check_numbers(manifest)
    graphs = {"forward": manifest.forward, "forward_int8": manifest.forward_int8, "gradient": manifest.gradient,
              "gradient_int8": manifest.gradient_int8}
    named = {"tokenizer_file": manifest.tokenizer_file, "embeddings_file": manifest.embeddings_file,
             "weights_file": manifest.weights_file,
             **{f"{k}.file": g.file for k, g in graphs.items() if g is not None}}
    if manifest.head_file:
        named["head_file"] = manifest.head_file
    for field, name in named.items():
        bundle_file(directory, name, field)
    needed = ["tokenizer_file", "embeddings_file", "forward.file", "weights_file"]
    for field in [*needed, *(["forward_int8.file"] if "forward_int8.file" in named else [])]:
        if not (directory / named[field]).is_file():
            raise BundleError(f"{directory / named[field]} is missing: the bundle is incomplete, {_FIX}")


def check_numbers(manifest: Manifest) -> None:
    """The manifest's labels and sizes on their own."""
    m = manifest
    if m.task != "similarity":
        if not m.labels:
            raise BundleError(f"manifest labels are empty: a {m.task} bundle needs one label per class; {_FIX}")
        if len(set(m.labels)) != len(m.labels):
            twice = sorted({lab for lab in m.labels if m.labels.count(lab) > 1})
            raise BundleError(f"manifest labels name {twice} more than once: a target label would be ambiguous; {_FIX}")
    for field in ("vocab_size", "embedding_dim", "feature_dim", "max_length"):
        if getattr(m, field) < 1 and not (field == "feature_dim" and getattr(m, field) == 0 and not _has_features(m)):
            raise BundleError(f"manifest {field} is {getattr(m, field)}: it must be >= 1; {_FIX}")


def _has_features(manifest: Manifest) -> bool:
    """Whether a graph gives or takes features (a bundle without them, imported headless, may say feature_dim 0)."""
    graphs = [g for g in (manifest.forward, manifest.forward_int8, manifest.gradient, manifest.gradient_int8) if g]
    return any("features" in g.outputs or "other" in g.inputs for g in graphs)


def check_values(manifest: Manifest, tokenizer: TextEncoder, embeddings: np.ndarray) -> None:
    """The manifest's numbers against the tokenizer and the embedding table."""
    m = manifest
    n_special = tokenizer.num_special_tokens()
    if m.max_length <= n_special:
        raise BundleError(f"manifest max_length is {m.max_length}: it must leave room for text after the tokenizer's "
                          f"{n_special} special tokens; {_FIX}")
    top = tokenizer.largest_id()
    if top >= m.vocab_size:
        raise BundleError(f"manifest vocab_size is {m.vocab_size}, but the tokenizer has ids up to {top}: those tokens "
                          f"would have no embedding; {_FIX}")
    for role, tok in m.special_tokens.items():
        if not 0 <= tok.id < m.vocab_size:
            raise BundleError(f"manifest special token {role} ({tok.token!r}) has id {tok.id}, outside 0..{m.vocab_size - 1}; "
                              f"{_FIX}")
        own = tokenizer.token_to_id(tok.token)
        if own != tok.id:
            raise BundleError(f"manifest special token {role} is {tok.token!r} with id {tok.id}, the tokenizer gives it "
                              f"{'no id' if own is None else f'id {own}'}; {_FIX}")
    if embeddings.ndim != 2 or embeddings.shape != (m.vocab_size, m.embedding_dim):
        raise BundleError(f"{m.embeddings_file} has shape {embeddings.shape}, manifest says "
                          f"{(m.vocab_size, m.embedding_dim)} (vocab_size, embedding_dim): the bundle is corrupt, {_FIX}")
    if embeddings.dtype not in EMBEDDING_DTYPES:
        raise BundleError(f"{m.embeddings_file} holds {embeddings.dtype}, not float32 or float16: quantised or integer "
                          f"embeddings would be read as wrong numbers; {_FIX}")


def _sizes(manifest: Manifest) -> dict[str, int]:
    """The size of each fixed axis name (what Model.run pads the objective inputs to)."""
    sizes = {"labels": len(manifest.labels), "top": 2, "features": manifest.feature_dim,
             "embedding": manifest.embedding_dim}
    if manifest.task == "similarity":  # a cosine: its bundles need not list labels
        del sizes["labels"]
    return sizes


def check_graph(manifest: Manifest, spec: GraphSpec, session: ort.InferenceSession, kind: str) -> None:
    """One graph against the manifest: tensor names, then declared shapes and types, then one run of a two-token
    row whose output shapes must be what the manifest says (labels, features, embedding width)."""
    where = f"the {kind} graph ({spec.file})"
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    # names
    needed_in = ["inputs_embeds", "attention_mask"] + (["token_type_ids"] if manifest.uses_token_type_ids else [])
    needed_out = ["grad"] if kind.startswith("gradient") else (["features"] if manifest.task == "similarity" else ["logits"])
    for role in needed_in:
        if role not in spec.inputs:
            raise BundleError(f"manifest {kind}.inputs has no {role!r}: the runtime feeds it; {_FIX}")
    for role in needed_out:
        if role not in spec.outputs:
            raise BundleError(f"manifest {kind}.outputs has no {role!r}: the runtime reads it; {_FIX}")
    for table, real, what in ((spec.inputs, inputs, "input"), (spec.outputs, outputs, "output")):
        for role, name in table.items():
            if name not in real:
                raise BundleError(f"manifest {kind}.{what}s.{role} is {name!r}, but {where} has no {what} of that name "
                                  f"(its {what}s: {', '.join(real)}); {_FIX}")
    unfed = sorted(set(inputs) - set(spec.inputs.values()))
    if unfed:
        raise BundleError(f"{where} needs input(s) {unfed} that the manifest does not name, so the runtime cannot feed "
                          f"them; {_FIX}")
    # shapes and types, as declared by the graph
    sizes = _sizes(manifest)
    for table, real, what in ((spec.inputs, inputs, "input"), (spec.outputs, outputs, "output")):
        for role, name in table.items():
            node = real[name]
            axes = spec.axes_of(role)
            want_types = (_FEED_TYPES.get(role, "tensor(float)"),) if what == "input" else _OUTPUT_TYPES
            if node.type not in want_types:
                raise BundleError(f"{where} {what} {name!r} ({role}) is {node.type}, the runtime "
                                  f"{'feeds' if what == 'input' else 'reads'} {' or '.join(want_types)}; {_FIX}")
            shape = list(node.shape) if node.shape is not None else None
            if not axes or shape is None:
                continue
            if len(shape) != len(axes):
                raise BundleError(f"{where} {what} {name!r} ({role}) has {len(shape)} axes {shape}, manifest says "
                                  f"{len(axes)} ({', '.join(axes)}); {_FIX}")
            for axis, dim in zip(axes, shape):
                if isinstance(dim, int) and axis in sizes and dim != sizes[axis]:
                    raise BundleError(f"{where} {what} {name!r} ({role}) has {dim} along its {axis} axis, manifest says "
                                      f"{sizes[axis]} ({_axis_source(axis)}); {_FIX}")
    # values: one two-token row through the graph, every output checked against the manifest's sizes
    seq = 2
    feeds: dict[str, np.ndarray] = {}
    for role, name in spec.inputs.items():
        axes = spec.axes_of(role) or (["batch", "sequence"] if role in _TEXT_ROLES else ["batch", "labels"])
        shape = [1 if a == "batch" else seq if a == "sequence" else sizes.get(a, 1) for a in axes]
        if role in ("attention_mask",):
            feeds[name] = np.ones(shape, dtype=np.int64)
        elif role == "token_type_ids":
            feeds[name] = np.zeros(shape, dtype=np.int64)
        else:
            feeds[name] = np.zeros(shape, dtype=np.float32)
    names = list(spec.outputs.values())
    try:
        results = session.run(names, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BundleError(f"{where} fails on a two-token row shaped as the manifest says "
                          f"({str(exc).splitlines()[0][:300]}); {_FIX}") from exc
    for (role, name), arr in zip(spec.outputs.items(), results):
        axes = spec.axes_of(role)
        if not axes:
            continue
        want = [1 if a == "batch" else seq if a == "sequence" else sizes.get(a) for a in axes]
        got = list(np.shape(arr))
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            bad = next((a for a, g, w in zip(axes, got, want) if w is not None and g != w), None)
            detail = (f"{got[axes.index(bad)]} along its {bad} axis, manifest says {sizes[bad]} ({_axis_source(bad)})"
                      if bad in sizes and len(got) == len(want) else f"shape {got}, manifest says {want} ({', '.join(axes)})")
            raise BundleError(f"{where} output {name!r} ({role}) has {detail}; {_FIX}")


def _axis_source(axis: str) -> str:
    return {"labels": "the number of labels", "features": "feature_dim", "embedding": "embedding_dim",
            "top": "logit and probability"}.get(axis, axis)
