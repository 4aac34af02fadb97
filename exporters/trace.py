"""Forward and gradient graphs through make_fx -> torch.export -> torch.onnx (see shared/design/GRADIENT_EXPORT.md).

The gradient graph computes ``d/d inputs_embeds sum(w_logit * logits + w_prob * softmax(logits))`` plus, for the
arg-max class k of each row, ``w_top[:, 0] * logits[k] + w_top[:, 1] * softmax(logits)[k]``: the predicted class's
gradient in one run, without a forward pass first to learn which class that is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .errors import ExportError

FORWARD_INPUTS = ("inputs_embeds", "attention_mask", "token_type_ids")


@contextlib.contextmanager
def _tracing_config() -> Iterator[None]:
    """No duck shaping (equal example sizes must not unify); the MATH attention backend; always restored."""
    import torch.fx.experimental._config as fx_config
    from torch.nn.attention import SDPBackend, sdpa_kernel

    old = fx_config.use_duck_shape
    fx_config.use_duck_shape = False
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        fx_config.use_duck_shape = old


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx prints progress and warnings on stdout; keep the CLI's output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def example_inputs(batch: int, seq: int, embedding_dim: int, n_labels: int, uses_tt: bool,
                   gradient: bool, task: str = "sequence-classification",
                   feature_dim: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, seq, embedding_dim, generator=g) * 0.05
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[0, seq - 2:] = 0  # padding in the trace, so no branch specialises on an all-ones mask
    inputs: list[torch.Tensor] = [embeds, mask]
    if uses_tt:
        inputs.append(torch.zeros(batch, seq, dtype=torch.int64))
    if gradient and task == "similarity":
        inputs.append(torch.randn(batch, feature_dim, generator=g))
    elif gradient:
        lead = (batch, seq) if task == "token-classification" else (batch,)
        inputs += [torch.randn(*lead, n_labels, generator=g), torch.randn(*lead, n_labels, generator=g),
                   torch.randn(*lead, 2, generator=g)]
    return tuple(inputs)


def make_functions(module: torch.nn.Module, uses_tt: bool, task: str = "sequence-classification"):
    """The two functions traced: forward -> the task's outputs (logits and features; features alone for
    similarity), gradient -> (logits, grad), with ``grad = d objective / d inputs_embeds``:

    - classification: ``sum(w_logit * logits + w_prob * probs) + sum(top * (w_top[..., :1] * logits + w_top[..., 1:] *
      probs))``, over (batch, labels) or, for token classification, (batch, sequence, labels); ``probs`` is the
      softmax over labels, or the sigmoid for a one-output model; ``top`` the one-hot arg-max label (first max).
    - similarity: the cosine between the encoding and ``other`` (batch, features), returned as (batch, 1) logits.
    """
    n_in = 3 if uses_tt else 2

    def forward_fn(*args: torch.Tensor):
        with torch.no_grad():
            return module(*args)

    def gradient_fn(*args: torch.Tensor):
        embeds = args[0].detach().requires_grad_(True)
        with torch.enable_grad():
            if task == "similarity":
                (encoded,) = module(embeds, *args[1:n_in])
                other = args[n_in]
                cos = (encoded * other).sum(-1) / (encoded.norm(dim=-1) * other.norm(dim=-1)).clamp(min=1e-12)
                (grad,) = torch.autograd.grad(cos.sum(), embeds)
                return cos.detach()[:, None], grad
            w_logit, w_prob, w_top = args[n_in], args[n_in + 1], args[n_in + 2]
            logits, _ = module(embeds, *args[1:n_in])
            probs = torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)
            classes = torch.arange(logits.shape[-1], device=logits.device)
            top = (classes == logits.detach().argmax(dim=-1, keepdim=True)).to(logits.dtype)  # first max
            objective = ((w_logit * logits + w_prob * probs).sum()
                         + (top * (w_top[..., :1] * logits + w_top[..., 1:] * probs)).sum())
            (grad,) = torch.autograd.grad(objective, embeds)
        return logits.detach(), grad

    return forward_fn, gradient_fn


def _pick_example_sizes(max_length: int, forbidden: set[int]) -> tuple[int, int]:
    """A batch and a sequence length that equal no other dimension of the model (duck-shaping trap)."""
    candidates = [7, 11, 13, 17, 19, 23, 29, 31, 37]
    batch = next(c for c in candidates if c not in forbidden)
    seqs = [c for c in candidates if c not in forbidden | {batch} and c <= max_length]
    seq = seqs[0] if seqs else max(2, min(max_length, 3))
    return batch, seq


def export_graph(fn: Any, inputs: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
                 max_length: int, opset: int, sequence_inputs: tuple[str, ...] = FORWARD_INPUTS,
                 progress: Callable[[str], None] | None = None):
    """Trace ``fn`` symbolically and convert it to an ONNX ModelProto with dynamic batch and sequence axes."""
    say = progress or (lambda _stage: None)  # told "trace" and "convert" as those stages start
    from torch.fx.experimental.proxy_tensor import make_fx

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    seq = torch.export.Dim("sequence", min=1, max=max_length)
    shapes: list[dict[int, Any]] = []
    for name in input_names:
        shapes.append({0: batch, 1: seq} if name in sequence_inputs else {0: batch})
    try:
        with _tracing_config(), _quiet():
            say("trace")
            gm = make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
            program = torch.export.export(gm, inputs, dynamic_shapes=tuple(shapes))
            say("convert")
            onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=input_names,
                                             output_names=output_names, verbose=False)
    except Exception as exc:  # noqa: BLE001 - the tracer raises many kinds; report them as one
        raise ExportError(f"tracing failed ({type(exc).__name__}): {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if onnx_program is None:
        raise ExportError("torch.onnx.export returned no program")
    return onnx_program.model_proto
