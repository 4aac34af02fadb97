"""The bundle manifest: the only contract between the exporter and the runtime.

The exporter writes `manifest.json` with :func:`Manifest.to_dict`; the runtime reads it with
:func:`Manifest.load`. Neither side hard-codes a tensor or file name outside this module.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v1: text classification only, no task field, no axes
MANIFEST_FILE = "manifest.json"

TASKS = ("sequence-classification", "token-classification", "similarity")

# The bundle contract per task, for every exporter (torch's and the ONNX import): the gradient graph's objective
# inputs, and the forward graph's outputs (gradient graph outputs: logits and grad, for every task).
GRADIENT_WEIGHTS = ("w_logit", "w_prob", "w_top")
OBJECTIVE_INPUTS: dict[str, tuple[str, ...]] = {"sequence-classification": GRADIENT_WEIGHTS,
                                                "token-classification": GRADIENT_WEIGHTS, "similarity": ("other",)}
FORWARD_OUTPUTS: dict[str, tuple[str, ...]] = {"sequence-classification": ("logits", "features"),
                                               "token-classification": ("logits", "features"),
                                               "similarity": ("features",)}

# The axes of each graph tensor, by role, for each task: what Model.run pads and slices along the sequence.
_SEQ = ["batch", "sequence"]
DEFAULT_AXES: dict[str, dict[str, list[str]]] = {
    "sequence-classification": {
        "inputs_embeds": [*_SEQ, "embedding"], "attention_mask": _SEQ, "token_type_ids": _SEQ,
        "w_logit": ["batch", "labels"], "w_prob": ["batch", "labels"], "w_top": ["batch", "top"],
        "logits": ["batch", "labels"], "features": ["batch", "features"], "grad": [*_SEQ, "embedding"]},
    "token-classification": {
        "inputs_embeds": [*_SEQ, "embedding"], "attention_mask": _SEQ, "token_type_ids": _SEQ,
        "w_logit": [*_SEQ, "labels"], "w_prob": [*_SEQ, "labels"], "w_top": [*_SEQ, "top"],
        "logits": [*_SEQ, "labels"], "features": [*_SEQ, "features"], "grad": [*_SEQ, "embedding"]},
    "similarity": {
        "inputs_embeds": [*_SEQ, "embedding"], "attention_mask": _SEQ, "token_type_ids": _SEQ,
        "other": ["batch", "features"], "logits": ["batch", "labels"], "features": ["batch", "features"],
        "grad": [*_SEQ, "embedding"]},
}


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph in the bundle: its file and the names of its tensors.

    ``inputs`` and ``outputs`` map a role (``inputs_embeds``, ``attention_mask``, ``token_type_ids``,
    ``w_logit``, ``w_prob``, ``w_top``, ``other``; ``logits``, ``features``, ``grad``) to the tensor name in the graph.
    ``axes`` (v2) names each role's axes (``batch``, ``sequence``, ``labels``, ...); v1 bundles get the defaults
    of their task.
    """

    file: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    axes: dict[str, list[str]] = field(default_factory=dict)

    def axes_of(self, role: str) -> list[str]:
        return self.axes.get(role, [])


@dataclass(frozen=True)
class SpecialToken:
    token: str
    id: int


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    source_kind: str  # "hf-classifier", "hf-token-classifier", "sentence-transformer" or "onnx-import"
    model_type: str
    architecture: str
    labels: tuple[str, ...]
    special_tokens: dict[str, SpecialToken]  # roles: pad, mask, unk, cls, sep (those the tokenizer has)
    max_length: int
    embedding_dim: int
    feature_dim: int
    vocab_size: int
    uses_token_type_ids: bool
    opset: int
    tokenizer_file: str
    embeddings_file: str
    head_file: str
    weights_file: str
    forward: GraphSpec
    gradient: GraphSpec | None
    gradient_int8: GraphSpec | None = None  # optional int8 copy of the gradient graph (export --int8)
    forward_int8: GraphSpec | None = None  # optional int8 copy of the forward graph (export --int8)
    tool_versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    #: v2: what the bundle computes (TASKS); v1 bundles are sequence classifiers
    task: str = "sequence-classification"
    #: v2: the encoder's pooling and normalisation (informational; the graph applies them)
    pooling: str | None = None
    normalize: bool = False
    #: what the bundle lacks and why, by capability: ``gradient`` (no gradient graph: the gradient methods),
    #: ``features`` (no ``features`` output: influence and prototypes). The graphs decide what is served
    #: (:meth:`Model.unavailable_methods`); this says why, where the exporter knows (an imported quantised graph, an
    #: imported graph without a recognisable classification head).
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    def save(self, directory: Path) -> None:
        (Path(directory) / MANIFEST_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        version = d.get("schema_version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise BundleError(
                f"bundle schema version {version!r} is not supported (this runtime reads {READABLE_VERSIONS}): "
                "re-export the model with this version's `xai-onnx export`"
            )
        task = str(d.get("task", "sequence-classification"))
        if task not in TASKS:
            raise BundleError(f"bundle task {task!r} is not known to this runtime (it knows {', '.join(TASKS)}): "
                              "upgrade xai-onnx or re-export the bundle")
        axes = DEFAULT_AXES[task]

        def graph(spec: Any) -> GraphSpec | None:
            if not spec:
                return None
            if not isinstance(spec, dict):
                raise TypeError("a graph entry must be an object")
            inputs, outputs = dict(spec["inputs"]), dict(spec["outputs"])
            own = {str(k): [str(a) for a in v] for k, v in dict(spec.get("axes") or {}).items()}
            full = {r: own.get(r, axes.get(r, [])) for r in [*inputs, *outputs]}
            return GraphSpec(str(spec["file"]), {str(k): str(v) for k, v in inputs.items()},
                             {str(k): str(v) for k, v in outputs.items()}, full)

        try:
            forward = graph(d["forward"])
            if forward is None:
                raise KeyError("forward")
            return cls(
                schema_version=int(d["schema_version"]),
                source_kind=str(d["source_kind"]),
                model_type=str(d["model_type"]),
                architecture=str(d["architecture"]),
                labels=tuple(str(x) for x in d["labels"]),
                special_tokens={k: SpecialToken(str(v["token"]), int(v["id"])) for k, v in d["special_tokens"].items()},
                max_length=int(d["max_length"]),
                embedding_dim=int(d["embedding_dim"]),
                feature_dim=int(d["feature_dim"]),
                vocab_size=int(d["vocab_size"]),
                uses_token_type_ids=bool(d["uses_token_type_ids"]),
                opset=int(d["opset"]),
                tokenizer_file=str(d["tokenizer_file"]),
                embeddings_file=str(d["embeddings_file"]),
                head_file=str(d["head_file"]),
                weights_file=str(d["weights_file"]),
                forward=forward,
                gradient=graph(d.get("gradient")),
                gradient_int8=graph(d.get("gradient_int8")),
                forward_int8=graph(d.get("forward_int8")),
                tool_versions=dict(d.get("tool_versions", {})),
                validation=dict(d.get("validation", {})),
                task=task,
                pooling=None if d.get("pooling") is None else str(d["pooling"]),
                normalize=bool(d.get("normalize", False)),
                unavailable={str(k): str(v) for k, v in dict(d.get("unavailable") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest is malformed ({type(exc).__name__}: {exc}): re-export the bundle") from exc

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        if Path(directory).is_file():
            raise BundleError(bundle_is_a_file(Path(directory)))
        if not Path(directory).is_dir():
            raise BundleError(f"bundle directory not found: {directory}")
        if not path.is_file():
            raise BundleError(f"{path} is missing: not an explainer bundle (create one with `xai-onnx export`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path} is not valid JSON ({exc}): the bundle is corrupt, re-export it") from exc
        if not isinstance(data, dict):
            raise BundleError(f"{path} does not hold a JSON object: the bundle is corrupt, re-export it")
        return cls.from_dict(data)


def bundle_is_a_file(p: Path) -> str:
    """What to say when a file is given where a bundle goes (an .onnx graph, most often)."""
    msg = (f"{p} is a file, not a bundle: a bundle is the directory `xai-onnx export` writes (manifest.json, the "
           "forward and gradient ONNX graphs, tokenizer.json, the embeddings and the head)")
    if (p.parent / MANIFEST_FILE).is_file():
        return f"{msg}; this file is part of the bundle {p.parent}: give that directory"
    if p.suffix.lower() == ".onnx":
        msg += ("; an .onnx file alone lacks the tokenizer, the embeddings and the gradient graph: import it with "
                "`xai-onnx import --model FILE.onnx --tokenizer tokenizer.json --labels A,B OUT_DIR` (or give the "
                "directory optimum exported it to), or export the Hugging Face model it came from with "
                "`xai-onnx export MODEL_DIR BUNDLE_DIR`")
    else:
        msg += "; make one with `xai-onnx export MODEL_DIR BUNDLE_DIR`"
    return msg
