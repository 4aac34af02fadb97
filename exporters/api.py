"""``export_bundle``: a Hugging Face source directory -> an explainer bundle directory."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from xai_onnx.manifest import (
    DEFAULT_AXES,
    FORWARD_OUTPUTS,
    OBJECTIVE_INPUTS,
    SCHEMA_VERSION,
    TASKS,
    GraphSpec,
    Manifest,
    SpecialToken,
)

from .errors import ExportInputError
from .output import check_output, make_work_dir, remove_stale_work_dirs, swap_into_place, terminate_as_interrupt
from .sources import first_token_last_layer, prepare
from .storage import save_with_shared_weights
from .trace import (
    FORWARD_INPUTS,
    _pick_example_sizes,
    example_inputs,
    export_graph,
    make_functions,
)
from .validate import validate

SUPPORTED_OPSETS = range(18, 24)
#: ``progress(stage, detail)`` is called as each stage starts: load, trace, convert, save, validate, quantize, done
Progress = Callable[[str, str], None]
FILES = {"forward": "forward.onnx", "forward_int8": "forward.int8.onnx", "gradient": "gradient.onnx",
         "gradient_int8": "gradient.int8.onnx", "weights": "weights.bin",
         "embeddings": "embeddings.npy", "head": "head.npz", "tokenizer": "tokenizer.json"}


def _step(say: Callable[[str, str], None], stage: str, detail: str) -> None:
    """A finished step of a stage: its own line with its own time where the progress display has steps
    (:meth:`xai_onnx.progress.Stages.step`), else a stage update."""
    step = getattr(say, "step", None)
    (step or say)(stage, detail)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("xai-onnx", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "optimum", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@terminate_as_interrupt()
def export_bundle(source: str | Path, out_dir: str | Path, *, head: str | Path | None = None,
                  max_length: int | None = None, opset: int = 18, gradient: bool = True,
                  overwrite: bool = False, validate_export: bool = True, int8: bool = False,
                  task: str | None = None, progress: Progress | None = None) -> Manifest:
    """Export ``source`` (a HF classifier directory, or a sentence-transformers encoder with ``head``) to ``out_dir``.

    The bundle is built in a work directory next to ``out_dir`` and swapped into place only after validation
    passed, so a failed or interrupted (SIGINT, SIGTERM) export leaves nothing behind; the next export to the same
    place removes what a killed one (SIGKILL) left. ``overwrite`` replaces only a directory that holds a bundle, in
    one step (:func:`~xai_onnx_exporters.output.swap_into_place`). Called in the main thread, SIGTERM during the
    export raises :class:`~xai_onnx_exporters.output.ExportTerminated` (a KeyboardInterrupt) once the work directory
    is removed; the caller's own SIGTERM handler is back when the function returns.

    Returns the bundle's manifest. ``int8`` adds an int8 copy
    of the gradient graph (``Model(bundle, precision="int8")``), its fidelity against float32 in the manifest.
    ``task`` (``sequence-classification``, ``token-classification``, ``similarity``) overrides the detected task.
    ``progress(stage, detail)`` is told of each stage as it starts (and of each validation shape as it is checked).
    """
    say = progress or (lambda _stage, _detail: None)
    if task is not None and task not in TASKS:
        raise ExportInputError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportInputError(f"--opset {opset} is not supported: use {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}")
    out = check_output(Path(out_dir), overwrite)
    remove_stale_work_dirs(out)
    say("load", f"reading {source}")
    prep = prepare(source, head, max_length, task)
    task = prep.task
    if int8 and task != "sequence-classification":
        raise ExportInputError("--int8 is available for sequence classifiers only")
    import torch

    n_labels = len(prep.labels)
    emb_dim = int(prep.embeddings.shape[1])
    feature_dim = int(prep.head_weight.shape[1])
    forbidden = {n_labels, emb_dim, feature_dim, prep.max_length, 2}
    batch, seq = _pick_example_sizes(prep.max_length, forbidden)
    fwd_fn, grad_fn = make_functions(prep.module, prep.uses_token_type_ids, task)
    in_names = [n for n in FORWARD_INPUTS if n != "token_type_ids" or prep.uses_token_type_ids]
    objective_inputs = list(OBJECTIVE_INPUTS[task])
    seq_inputs = FORWARD_INPUTS + (tuple(objective_inputs) if task == "token-classification" else ())
    t0 = time.perf_counter()
    with torch.inference_mode(False), first_token_last_layer(prep) as first_token_only:
        models = {}
        if gradient:
            ex = example_inputs(batch, seq, emb_dim, n_labels, prep.uses_token_type_ids, gradient=True, task=task,
                                feature_dim=feature_dim)
            models[FILES["gradient"]] = export_graph(grad_fn, ex, in_names + objective_inputs, ["logits", "grad"],
                                                     prep.max_length, opset, seq_inputs,
                                                     progress=lambda st: say(st, "gradient graph"))
        ex = example_inputs(batch, seq, emb_dim, n_labels, prep.uses_token_type_ids, gradient=False, task=task)
        models[FILES["forward"]] = export_graph(fwd_fn, ex, in_names, list(FORWARD_OUTPUTS[task]), prep.max_length,
                                                opset, progress=lambda st: say(st, "forward graph"))
    export_seconds = time.perf_counter() - t0

    work, tmp = make_work_dir(out)
    try:
        say("save", "weights, embeddings, head and tokenizer")
        sizes = save_with_shared_weights(models, tmp, FILES["weights"])
        np.save(tmp / FILES["embeddings"], prep.embeddings)
        if prep.head_weight.shape[0]:
            np.savez(tmp / FILES["head"], W=prep.head_weight, b=prep.head_bias, labels=np.array(prep.labels))
        (tmp / FILES["tokenizer"]).write_text(prep.tokenizer_json, encoding="utf-8")
        report = {}
        if validate_export:
            say("validate", "against torch autograd on shapes the trace never saw")
            report = validate(tmp / FILES["forward"], tmp / FILES["gradient"] if gradient else None, (fwd_fn, grad_fn),
                              prep.embeddings, n_labels, prep.uses_token_type_ids, prep.max_length, (batch, seq),
                              task=task, feature_dim=feature_dim, progress=lambda detail: _step(say, "validate", detail))
        if int8 and gradient:
            from .quantize import int8_fidelity, quantize_gradient

            say("quantize", "int8 copy of the gradient graph, and its fidelity against float32")
            quantize_gradient(tmp, FILES["gradient"], FILES["gradient_int8"])
            report["int8"] = int8_fidelity(tmp, FILES["gradient"], FILES["gradient_int8"], prep.embeddings, n_labels,
                                           prep.uses_token_type_ids, prep.max_length)
        if int8 and "logits" in FORWARD_OUTPUTS[task]:  # a similarity encoder's forward graph has no logits to compare
            from .quantize import forward_int8_fidelity, quantize_gradient

            quantize_gradient(tmp, FILES["forward"], FILES["forward_int8"])
            report["int8_forward"] = forward_int8_fidelity(tmp, FILES["forward"], FILES["forward_int8"],
                                                           prep.embeddings, prep.uses_token_type_ids, prep.max_length)
        report["last_layer_first_token_only"] = first_token_only
        report["export_seconds"] = round(export_seconds, 2)
        report["weights_bytes"] = sizes
        io_names = {n: n for n in in_names}
        axes = DEFAULT_AXES[task]
        fwd_out = {n: n for n in FORWARD_OUTPUTS[task]}
        grad_in = {**io_names, **{w: w for w in objective_inputs}}
        grad_out = {"logits": "logits", "grad": "grad"}

        def spec(file: str, inputs: dict[str, str], outputs: dict[str, str]) -> GraphSpec:
            return GraphSpec(file, inputs, outputs, {r: list(axes[r]) for r in [*inputs, *outputs]})
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            source_kind=prep.source_kind,
            model_type=prep.model_type,
            architecture=prep.architecture,
            labels=tuple(prep.labels),
            special_tokens={k: SpecialToken(str(v["token"]), int(v["id"])) for k, v in prep.special_tokens.items()},
            max_length=prep.max_length,
            embedding_dim=emb_dim,
            feature_dim=feature_dim,
            vocab_size=int(prep.embeddings.shape[0]),
            uses_token_type_ids=prep.uses_token_type_ids,
            opset=opset,
            tokenizer_file=FILES["tokenizer"],
            embeddings_file=FILES["embeddings"],
            head_file=FILES["head"] if prep.head_weight.shape[0] else "",
            weights_file=FILES["weights"],
            forward=spec(FILES["forward"], io_names, fwd_out),
            gradient=spec(FILES["gradient"], grad_in, grad_out) if gradient else None,
            gradient_int8=spec(FILES["gradient_int8"], grad_in, grad_out) if int8 and gradient else None,
            forward_int8=spec(FILES["forward_int8"], io_names, fwd_out) if int8 and "logits" in fwd_out else None,
            tool_versions=_versions(),
            validation=report,
            task=task,
            pooling=prep.pooling,
            normalize=prep.normalize,
        )
        manifest.save(tmp)
        swap_into_place(work, tmp, out)
    except BaseException:  # ExportTerminated (SIGTERM) and KeyboardInterrupt too
        shutil.rmtree(work, ignore_errors=True)
        raise
    say("done", str(out))
    return manifest
