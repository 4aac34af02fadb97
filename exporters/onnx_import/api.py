"""``import_bundle``: an ONNX text model (an optimum export, or any graph taking ``input_ids``) -> a bundle.

Tasks, detected from the graph's outputs and then config.json as ``xai-onnx export`` does (or given): a sequence
classifier (``logits`` (batch, labels)), a token classifier (``logits`` (batch, sequence, labels)), and an encoder
without a head (``last_hidden_state``: optimum's feature-extraction export), imported for similarity. The bundles
have the contract every exporter follows for the same task (:data:`xai_onnx.manifest.OBJECTIVE_INPUTS`, ``FORWARD_OUTPUTS``).

Needs onnx, onnxruntime, numpy and tokenizers only: no torch, no transformers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

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

from ..errors import ExportInputError
from .autodiff import QUANTIZED, gradient_model
from .similarity import (
    HIDDEN_OUTPUTS,
    POOLINGS,
    add_pooling,
    cosine_model,
    pooling_of_sentence_embedding,
    sentence_transformers_pooling,
)
from .surgery import cut

FILES = {"forward": "forward.onnx", "gradient": "gradient.onnx", "weights": "weights.bin", "embeddings": "embeddings.npy",
         "head": "head.npz", "tokenizer": "tokenizer.json"}
SPECIAL_ROLES = ("pad", "mask", "unk", "cls", "sep")
_ROLE_FALLBACKS = {"cls": "bos", "sep": "eos"}
_GUESSES = {"pad": ("[PAD]", "<pad>"), "mask": ("[MASK]", "<mask>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<s>"),
            "sep": ("[SEP]", "</s>")}
# position ids of these start after the padding index (HF's create_position_ids_from_input_ids)
_PADDING_OFFSET = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text", "xmod", "ernie_m")
TASK_SUFFIXES = {"ForSequenceClassification": "sequence-classification", "ForTokenClassification": "token-classification"}
GRADIENT_METHODS_NOTE = "quantised graph: gradient methods (saliency, ig, gradient x input) are unavailable"


@dataclass
class Source:
    model: Path
    tokenizer: Path
    config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    directory: Path  # where config.json and a sentence-transformers layout (modules.json) are looked for


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportInputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ExportInputError(f"{path} does not hold a JSON object")
    return data


def resolve_source(src: str | Path | None, model: str | Path | None, tokenizer: str | Path | None) -> Source:
    """An optimum-style directory (model.onnx, tokenizer.json, config.json), or explicit files."""
    if src is not None:
        d = Path(src)
        if d.is_file() and d.suffix == ".onnx":
            model, d = d, d.parent
        elif not d.is_dir():
            raise ExportInputError(f"source not found: {d} (give a directory holding model.onnx, or --model FILE.onnx)")
        model = Path(model) if model else d / "model.onnx"
        tokenizer = Path(tokenizer) if tokenizer else d / "tokenizer.json"
        base = d
    else:
        if model is None or tokenizer is None:
            raise ExportInputError("give a source directory, or both --model FILE.onnx and --tokenizer tokenizer.json")
        model, tokenizer = Path(model), Path(tokenizer)
        base = Path(model).parent
    if not Path(model).is_file():
        raise ExportInputError(f"ONNX model not found: {model}")
    if not Path(tokenizer).is_file():
        raise ExportInputError(f"tokenizer not found: {tokenizer} (a tokenizers JSON file; give it with --tokenizer)")
    config = _read_json(base / "config.json") if (base / "config.json").is_file() else {}
    tok_cfg: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (base / name).is_file():
            tok_cfg.update(_read_json(base / name))
    return Source(Path(model), Path(tokenizer), config, tok_cfg, base)


def _token_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def tokenizer_parts(src: Source) -> tuple[str, dict[str, SpecialToken], int | None]:
    """tokenizer.json without padding/truncation, special tokens by role, the tokenizer's model_max_length."""
    from tokenizers import Tokenizer

    text = src.tokenizer.read_text(encoding="utf-8")
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own untyped errors
        raise ExportInputError(f"cannot load {src.tokenizer} as a tokenizers JSON file: {exc}") from exc
    backend = json.loads(text)
    backend["padding"] = None  # the runtime sets its own from the manifest
    backend["truncation"] = None
    specials: dict[str, SpecialToken] = {}
    for role in SPECIAL_ROLES:
        candidates = [_token_text(src.tokenizer_config.get(f"{role}_token")),
                      _token_text(src.tokenizer_config.get(f"{_ROLE_FALLBACKS.get(role, role)}_token")), *_GUESSES[role]]
        for c in candidates:
            if c is not None and tok.token_to_id(c) is not None:
                specials[role] = SpecialToken(c, int(tok.token_to_id(c)))
                break
    if "pad" not in specials:
        raise ExportInputError(f"the tokenizer {src.tokenizer} has no pad token; a baseline needs one")
    mml = src.tokenizer_config.get("model_max_length")
    mml = int(mml) if isinstance(mml, (int, float)) and 1 < mml < 1_000_000 else None
    return json.dumps(backend, ensure_ascii=False), specials, mml


def _max_length(src: Source, requested: int | None, tok_max: int | None, pad_id: int, compared: tuple[int, ...]) -> int:
    """The token limit: the position table's rows less the positions reserved before the first token (a graph that
    compares input_ids with a padding index counts positions from the index + 1, as RoBERTa and MPNet do)."""
    cfg = src.config
    limit = None
    if isinstance(cfg.get("max_position_embeddings"), int):
        offset = max(compared) + 1 if compared else pad_id + 1 if cfg.get("model_type") in _PADDING_OFFSET else 0
        limit = int(cfg["max_position_embeddings"]) - offset
    if requested is not None:
        if requested < 2:
            raise ExportInputError(f"--max-length {requested} is too small: it must hold at least the two special tokens")
        if limit is not None and requested > limit:
            raise ExportInputError(f"--max-length {requested} exceeds the model's position limit of {limit}")
        return requested
    found = [x for x in (limit, tok_max) if x]
    if not found:
        raise ExportInputError("no config.json with max_position_embeddings next to the model: give --max-length")
    return min(found)


def _labels(src: Source, labels: list[str] | None, n: int) -> list[str]:
    if labels is None:
        id2label = src.config.get("id2label") or {}
        labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    if len(labels) != n:
        raise ExportInputError(f"{len(labels)} labels given but the model has {n} outputs")
    if n < 2:
        raise ExportInputError("the model has a single output: only single-label classifiers (softmax over >= 2 classes) "
                               "are supported")
    return labels


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("xai-onnx", "onnx", "onnxruntime", "tokenizers", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _check_output(out_dir: Path, overwrite: bool) -> Path:
    out = out_dir.resolve()
    if out.exists() and not out.is_dir():
        raise ExportInputError(f"output {out} exists and is not a directory: choose another path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportInputError(f"output directory {out} is not empty: choose another path or pass --overwrite")
    return out


def detect_task(graph_outputs: dict[str, int], source: Source) -> str:
    """What an imported graph computes, from its outputs (name: rank) first, then config.json's ``architectures``,
    then a sentence-transformers layout next to it: ``logits`` of rank 3 is a token classifier, of rank 2 a sequence
    classifier, ``last_hidden_state`` (or ``token_embeddings``) without logits an encoder for similarity."""
    if "logits" in graph_outputs:
        return "token-classification" if graph_outputs["logits"] == 3 else "sequence-classification"
    if any(h in graph_outputs for h in HIDDEN_OUTPUTS):
        return "similarity"
    found = {t for a in source.config.get("architectures") or [] for suffix, t in TASK_SUFFIXES.items()
             if str(a).endswith(suffix)}
    if len(found) == 1:
        return found.pop()
    if (source.directory / "modules.json").is_file():
        return "similarity"
    if len(graph_outputs) == 1 and next(iter(graph_outputs.values())) == 2:
        return "sequence-classification"
    raise ExportInputError(f"cannot tell the task of {source.model} from its outputs {sorted(graph_outputs)} or its "
                           f"config: give --task ({', '.join(TASKS)})")


def _table_rows(model: Any) -> int:
    """The word-embedding table's rows (the vocabulary the ids index)."""
    from .surgery import find_word_embedding

    return int(find_word_embedding(model.graph)[2].shape[0])


def _output_width(model: Any, name: str, uses_tt: bool, embeddings: np.ndarray) -> int:
    """The last extent of output ``name`` on a two-token row."""
    from .validate_fd import _session

    sess = _session(model.SerializeToString())
    feeds: dict[str, np.ndarray] = {"inputs_embeds": embeddings[None, :2].astype(np.float32),
                                    "attention_mask": np.ones((1, 2), np.int64)}
    if uses_tt:
        feeds["token_type_ids"] = np.zeros((1, 2), np.int64)
    return int(sess.run([name], feeds)[0].shape[-1])


def import_bundle(src: str | Path | None, out_dir: str | Path, *, model: str | Path | None = None,
                  tokenizer: str | Path | None = None, labels: list[str] | None = None, max_length: int | None = None,
                  gradient: bool = True, overwrite: bool = False, validate_import: bool = True, task: str | None = None,
                  pooling: str | None = None, normalize: bool | None = None) -> Manifest:
    """Import an ONNX text model into an explainer bundle at ``out_dir`` (built in a temporary directory, moved in
    only after validation). A quantised model is imported forward-only. Returns the manifest.

    ``task`` overrides the detected one (:func:`detect_task`). For similarity, ``pooling`` (``mean``, ``cls``) and
    ``normalize`` override what a sentence-transformers layout in the source says (default: mean, not normalised)."""
    import onnx

    from ..storage import save_with_shared_weights

    if task is not None and task not in TASKS:
        raise ExportInputError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    out = _check_output(Path(out_dir), overwrite)
    source = resolve_source(src, model, tokenizer)
    t0 = time.perf_counter()
    try:
        original = onnx.load(str(source.model))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise ExportInputError(f"cannot load {source.model} as ONNX: {exc}") from exc
    outputs = {o.name: len(o.type.tensor_type.shape.dim) for o in original.graph.output}
    task = task or detect_task(outputs, source)
    similarity = task == "similarity"
    if not similarity and (pooling is not None or normalize is not None):
        raise ExportInputError(f"--pooling and --normalize apply to similarity imports; this one is {task}")
    if similarity and labels is not None:
        raise ExportInputError("--labels applies to classifiers; a similarity bundle has no labels")
    if not similarity:
        rank = outputs.get("logits", next(iter(outputs.values())) if len(outputs) == 1 else 0)
        want = 3 if task == "token-classification" else 2
        if rank in (2, 3) and rank != want:
            raise ExportInputError(f"the graph's logits have {rank} axes: a {task} needs {want} "
                                   f"({', '.join(DEFAULT_AXES[task]['logits'])}); check --task")
    tok_json, specials, tok_max = tokenizer_parts(source)
    pad_id = specials["pad"].id
    fill = next((specials[r].id for r in ("unk", "cls", "mask") if r in specials and specials[r].id != pad_id), pad_id + 1)
    hidden_output: str | None = None
    if similarity:
        hidden_output = next((h for h in HIDDEN_OUTPUTS if h in outputs), None)
        if hidden_output is None:
            three = [n for n, r in outputs.items() if r == 3]
            if len(three) != 1:
                raise ExportInputError(f"no encoder output to pool among {sorted(outputs)}: similarity needs the token "
                                       f"states ({' or '.join(HIDDEN_OUTPUTS)}, batch x sequence x hidden)")
            hidden_output = three[0]
        found = sentence_transformers_pooling(source.directory) or ("mean", False)
        if "sentence_embedding" in outputs:  # the graph pools itself (optimum's sentence-transformers export): as it does
            own = pooling_of_sentence_embedding(source.model, hidden_output, _table_rows(original), fill, (pad_id,))
            if own is None and (pooling is None or normalize is None):
                raise ExportInputError("the graph's sentence_embedding is neither the mean nor the first token of its "
                                       f"{hidden_output}, normalised or not: give --pooling and --normalize/--no-normalize")
            found = own or found
        st_config = source.directory / "sentence_bert_config.json"
        st_max = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
        if isinstance(st_max, int) and st_max > 1:  # as export reads it
            tok_max = min(tok_max, st_max) if tok_max else st_max
        pooling = pooling or found[0]
        normalize = found[1] if normalize is None else normalize
        if pooling not in POOLINGS:
            raise ExportInputError(f"--pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    surgery = cut(original, fill_id=fill, logits=hidden_output, head=not similarity)
    fill = surgery.fill_id
    quantized = sorted({n.op_type for n in surgery.model.graph.node if n.op_type in QUANTIZED})
    notes: dict[str, Any] = {}
    unavailable: dict[str, str] = {}  # the manifest's: what the bundle lacks, and why
    if quantized:
        gradient = False
        notes["forward_only"] = f"{GRADIENT_METHODS_NOTE} ({', '.join(quantized)})"
        unavailable["gradient"] = notes["forward_only"]
    fwd_model = surgery.model
    embeddings = np.asarray(surgery.embeddings)
    head_w = head_b = None
    if similarity:
        assert pooling is not None
        feature_dim = _output_width(fwd_model, "logits", surgery.uses_token_type_ids, embeddings)
        add_pooling(fwd_model, "logits", feature_dim, pooling, bool(normalize))
        label_names = ["similarity"]
    else:
        if surgery.head_weight is not None and surgery.head_bias is not None:
            head_w, head_b = surgery.head_weight, surgery.head_bias
            feature_dim = int(head_w.shape[1])
            n_out = int(head_w.shape[0])
        else:
            # no features output: influence and prototypes refuse, saying why (Model.require_features)
            n_out = _output_width(fwd_model, "logits", surgery.uses_token_type_ids, embeddings)
            feature_dim = 0
            unavailable["features"] = f"no classification head found in the imported graph: {surgery.head_note}"
        label_names = _labels(source, labels, n_out)
    n_labels = len(label_names)
    max_len = _max_length(source, max_length, tok_max, pad_id, surgery.compared_ids)
    models = {FILES["forward"]: fwd_model}
    if gradient:
        models[FILES["gradient"]] = (gradient_model(cosine_model(fwd_model), objective="sum") if similarity
                                     else gradient_model(fwd_model))
    build_seconds = time.perf_counter() - t0

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        sizes = save_with_shared_weights(models, tmp, FILES["weights"])
        np.save(tmp / FILES["embeddings"], surgery.embeddings)
        if head_w is not None and head_b is not None:
            np.savez(tmp / FILES["head"], W=head_w, b=head_b, labels=np.array(label_names))
        (tmp / FILES["tokenizer"]).write_text(tok_json, encoding="utf-8")
        report: dict[str, Any] = {}
        if validate_import:
            from .validate_fd import validate

            report = validate(source.model, tmp / FILES["forward"], tmp / FILES["gradient"] if gradient else None,
                              surgery.embeddings, n_labels, surgery.uses_token_type_ids, max_len, fill,
                              (pad_id, *surgery.compared_ids), task=task, original_output=hidden_output,
                              pooling=pooling or "mean", normalize=bool(normalize))
        report.update(notes)
        report["import_seconds"] = round(time.perf_counter() - t0, 2)
        report["graph_build_seconds"] = round(build_seconds, 2)
        report["weights_bytes"] = sizes
        in_names = ["inputs_embeds", "attention_mask"] + (["token_type_ids"] if surgery.uses_token_type_ids else [])
        io_names = {n: n for n in in_names}
        opset = next((o.version for o in fwd_model.opset_import if o.domain in ("", "ai.onnx")), 0)
        cfg = source.config
        axes = DEFAULT_AXES[task]
        # the bundle contract every exporter follows (xai_onnx.manifest: FORWARD_OUTPUTS, OBJECTIVE_INPUTS)
        objective_inputs = OBJECTIVE_INPUTS[task]
        fwd_out = {n: n for n in FORWARD_OUTPUTS[task]}
        if "features" in unavailable:
            del fwd_out["features"]
        fwd_io = (io_names, fwd_out)
        grad_io = ({**io_names, **{w: w for w in objective_inputs}}, {"logits": "logits", "grad": "grad"})

        def spec(file: str, io: tuple[dict[str, str], dict[str, str]]) -> GraphSpec:
            return GraphSpec(file, io[0], io[1], {r: list(axes[r]) for r in [*io[0], *io[1]]})

        architecture = str((cfg.get("architectures") or [source.model.name])[0])
        if similarity:
            architecture = f"{architecture}+{pooling}-pooling{'+normalize' if normalize else ''}"
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            source_kind="onnx-import",
            model_type=str(cfg.get("model_type", "unknown")),
            architecture=architecture,
            labels=tuple(label_names),
            special_tokens=specials,
            max_length=max_len,
            embedding_dim=int(surgery.embeddings.shape[1]),
            feature_dim=feature_dim,
            vocab_size=int(surgery.embeddings.shape[0]),
            uses_token_type_ids=surgery.uses_token_type_ids,
            opset=opset,
            tokenizer_file=FILES["tokenizer"],
            embeddings_file=FILES["embeddings"],
            head_file=FILES["head"] if head_w is not None else "",
            weights_file=FILES["weights"],
            forward=spec(FILES["forward"], fwd_io),
            gradient=spec(FILES["gradient"], grad_io) if gradient else None,
            tool_versions=_versions(),
            validation=report,
            task=task,
            pooling=pooling if similarity else None,
            normalize=bool(normalize) if similarity else False,
            unavailable=unavailable,
        )
        manifest.save(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest

