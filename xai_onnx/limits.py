"""Work budgets: how much one request (service) or one call (CLI) may cost, stated once, and a cancellation token.

A request's cost is bounded in four ways: the number and length of its texts, the evaluations per text (gradient or
forward rows, estimated by :meth:`Explainer.evaluations` before any work), the rows per onnxruntime call (sized by a
memory estimate that grows with the sequence length, :func:`row_bytes`), and a wall-clock time limit that cancels
the running onnxruntime call (:class:`Cancel`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from .errors import InputError, XaiOnnxError

if TYPE_CHECKING:
    from .methods.base import Explainer
    from .model import Model

MIB = 1 << 20
# what to lower when a method's work per text is over the budget
LOWER = {"ig": "steps (or max_steps with adaptive)", "occlusion": "the windows: raise stride, or shorten the text",
         "fd": "the text's length (fd costs 2 rows per token)"}


@dataclass(frozen=True)
class Limits:
    """The service's limits (``xai-onnx serve`` options of the same names); ``max_evaluations`` also bounds the CLI.

    max_texts : texts per request (413 above). max_chars : characters per text, the baseline text included (413).
    max_steps : Integrated Gradients steps (``steps``, and ``max_steps`` of adaptive IG) (422 above).
    max_evaluations : gradient or forward rows per text and method, counting each target of ``"target": "all"``
        (422 above: the message names the option to lower).
    memory_budget : bytes of activations one onnxruntime call may hold; rows per call follow from it and the
        sequence length (:func:`row_bytes`), so that one explanation's memory is bounded whatever the text length.
    timeout : seconds per request, waiting for a worker included (504 after, and the running call is cancelled).
    max_concurrency : requests computing at once; max_queue : requests waiting for them (503 beyond).
    max_connections : open connections (more are closed at once); keep_alive : seconds an idle connection stays
        open; header_timeout : seconds a client has to send a whole request (headers and body) once it starts one.
    max_body_bytes : request body size (413 above), derived from max_texts and max_chars unless given.
    max_depth : JSON nesting; max_int_digits : digits of a JSON integer (400 above).
    """

    max_texts: int = 64
    max_chars: int = 10_000
    max_steps: int = 1024
    max_evaluations: int = 2048
    memory_budget: int = 512 * MIB
    timeout: float = 60.0
    max_concurrency: int = 2
    max_queue: int = 256
    max_connections: int = 512
    keep_alive: float = 5.0
    header_timeout: float = 10.0
    max_body_bytes: int | None = None
    max_depth: int = 8
    max_int_digits: int = 12

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_steps", "max_evaluations", "memory_budget", "max_concurrency",
                     "max_connections", "max_depth", "max_int_digits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"limit {name} must be a positive integer, got {value!r}")
        if self.max_queue < 0:
            raise InputError(f"limit max_queue must be >= 0, got {self.max_queue!r}")
        for name in ("timeout", "keep_alive", "header_timeout"):
            if not getattr(self, name) > 0:
                raise InputError(f"limit {name} must be > 0 seconds, got {getattr(self, name)!r}")

    @property
    def body_bytes(self) -> int:
        """The body limit: every text and text pair at its longest, each character JSON-escaped (6 bytes), plus the
        baseline text and 64 KiB of fields."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 6 * self.max_chars * (2 * self.max_texts + 1) + 64 * 1024

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_body_bytes"] = self.body_bytes
        return d


def check_work(model: Model, explainers: Sequence[Explainer], texts: Any, target: Any,
               max_evaluations: int, override: str = "--max-evaluations",
               text_pairs: Sequence[str] | None = None, task_options: dict[str, Any] | None = None) -> None:
    """InputError, before any explanation, when one text would cost a method more than ``max_evaluations`` rows,
    naming the option to lower (or ``override`` to raise the limit). Every target of a text counts: each label of
    ``"all"``, each explained position of a token classifier (with ``positions="entities"`` one forward pass
    finds them), both texts of a similarity pair; methods whose targets share rows (occlusion, fd) count a text
    once."""
    task = model.manifest.task
    encoded = model.task.encode(model.inputs(texts, text_pairs))
    classes = len(model.labels) if isinstance(target, str) and target == "all" else 1
    # per text: (tokens, targets) of each encoding it has
    per_text: list[list[tuple[int, int]]]
    if task == "similarity":
        per_text = [[(len(encoded[k]), 1), (len(encoded[k + 1]), 1)] for k in range(0, len(encoded), 2)]
    elif task == "token-classification":
        from .tasks import parse_positions

        options = task_options or {}
        spec = parse_positions(options.get("positions"))
        if spec == "entities":  # the prediction decides the positions: count them as explain will
            units = model.task.units(encoded, model.forward_rows(encoded), target, "logit", positions="entities",
                                     outside=options.get("outside"))
            counts: dict[int, int] = {}
            for u in units:
                counts[id(u.encoded)] = counts.get(id(u.encoded), 0) + 1
            per_text = [[(len(e), counts.get(id(e), 0))] for e in encoded]
        else:
            per_text = [[(len(e), classes * (int((~e.special).sum()) if spec == "all" else len(spec)))]
                        for e in encoded]
    else:
        per_text = [[(len(e), classes)] for e in encoded]
    for ex in explainers:
        for i, parts in enumerate(per_text):
            need = sum(ex.evaluations(n) * (min(t, 1) if ex.shares_rows else t) for n, t in parts)
            if need > max_evaluations:
                tokens = " + ".join(str(n) for n, _ in parts)
                targets = sum(t for _, t in parts)
                what = f"{tokens} tokens" + (f", {targets} targets" if targets > len(parts) else "")
                raise InputError(f"{ex.name} on text {i} ({what}) needs {need} evaluations; the limit is "
                                 f"{max_evaluations} per text: lower {LOWER.get(ex.name, 'the text length')}"
                                 f"{', or explain fewer targets' if targets > len(parts) else ''}, or raise {override}")


def row_bytes(seq: int, dim: int, layers: int, gradient: bool) -> int:
    """Estimated activation bytes of one row of ``seq`` tokens in one onnxruntime call (float32).

    A transformer layer holds about 20 (seq, dim) tensors (q, k, v, the 4x feed-forward, norms) and 3 (heads, seq, seq)
    attention tensors; heads is taken as dim / 32 (MiniLM's; BERT-base's dim / 64 is then over-counted, which only
    costs calls). A forward call frees them layer by layer (two layers live at once); the gradient graph keeps every
    layer's for the backward pass. Measured on minilm-sst2 (6 layers, dim 384), IG on a 512-token text: peak RSS 691 MB
    at 1 row a call, 1016 MB at 2 (about 330 MB a row); this gives 320 MB.
    """
    heads = max(1, dim // 32)
    per_layer = 4 * (20 * seq * dim + 3 * heads * seq * seq)
    return per_layer * (layers if gradient else min(layers, 2)) + 4 * 4 * seq * dim


def rows_within(budget: int, seq: int, dim: int, layers: int, gradient: bool) -> int:
    """Rows of ``seq`` tokens one call may hold within ``budget`` bytes (at least 1)."""
    return max(1, budget // max(1, row_bytes(seq, dim, layers, gradient)))


class Cancelled(XaiOnnxError, TimeoutError):
    """The work was cancelled (the service's time limit ran out)."""


class Cancel:
    """A cancellation token: :meth:`cancel` from any thread stops the work at the next onnxruntime call and
    terminates the running one (``RunOptions.terminate``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._active: set[ort.RunOptions] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for ro in self._active:
                ro.terminate = True

    def check(self) -> None:
        if self._cancelled:
            raise Cancelled("the work was cancelled: it ran past its time limit")

    @contextmanager
    def run_options(self) -> Iterator[ort.RunOptions]:
        """RunOptions for one onnxruntime call, terminated if :meth:`cancel` is called while it runs."""
        ro = ort.RunOptions()
        with self._lock:
            self.check()
            self._active.add(ro)
        try:
            yield ro
        finally:
            with self._lock:
                self._active.discard(ro)


_current = threading.local()


@contextmanager
def cancellable(token: Cancel | None) -> Iterator[None]:
    """Make ``token`` this thread's cancellation token (read by :meth:`Model.run`) for the ``with`` block."""
    previous = getattr(_current, "token", None)
    _current.token = token
    try:
        yield
    finally:
        _current.token = previous


def current_cancel() -> Cancel | None:
    return getattr(_current, "token", None)
