"""Explain (or predict) a corpus on a Ray cluster, with nothing lost.

:func:`read_corpus` reads JSONL, text and Parquet files in parallel (one Ray task per file) into rows that remember where
they came from; :func:`explain_dataset` and :func:`predict_dataset` run ``map_batches`` over a fixed pool of actors,
each holding one loaded bundle (one onnxruntime session with ``threads_per_worker`` threads); :func:`run` does both and
writes Parquet or JSONL. Every input row gives an output row: a row that cannot be read or explained carries an
``error`` instead of results. Actors killed mid-run are restarted and their batches retried (``retries``).

Needs ``pip install 'xai-onnx[ray]'``; Ray, pyarrow and the method registry are imported inside the functions.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BundleError, InputError, XaiOnnxError
from . import INPUT_FORMATS, OUTPUT_FORMATS

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
#: input fields a row takes apart; every other field is carried through as the ``input`` column (a JSON object)
_KNOWN = ("text", "text_pair", "id", "label")
#: the columns every row carries from its input
INPUT_COLUMNS = ("id", "file", "row", "text", "text_pair", "gold_label", "input", "error")
#: CPUs a read or write task asks for: reading is light next to explaining, and actors that take every CPU would
#: otherwise leave the read tasks none (the dataset then waits forever)
_IO_CPUS = 0.25


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the extra's absence
        from ..errors import install_hint

        raise InputError(f"the Ray engine needs Ray: {install_hint('ray')}") from exc
    return ray


# ---- reading ----------------------------------------------------------------------------------------------------
def list_files(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The files a path names, as absolute paths: a file, a directory (every file below it, hidden and ``_``-prefixed
    ones skipped, sorted) or a glob (``**`` recursive). Several paths may be given."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[str] = []
    for p in paths:
        s = os.fspath(p)
        if any(c in s for c in "*?["):
            matches = sorted(m for m in glob.glob(s, recursive=True) if os.path.isfile(m))
            if not matches:
                raise InputError(f"no file matches {s}")
            out += matches
        elif os.path.isdir(s):
            root = Path(s)
            files = sorted(str(f) for f in root.rglob("*") if f.is_file()
                           and not any(part.startswith((".", "_")) for part in f.relative_to(root).parts))
            if not files:
                raise InputError(f"directory {s} holds no input files")
            out += files
        elif os.path.isfile(s):
            out.append(s)
        else:
            raise InputError(f"input not found: {s} (give a file, a directory or a glob of JSONL, text or Parquet files)")
    return [os.path.abspath(f) for f in out]


def _format_of(path: str, input_format: str | None) -> str:
    if input_format is not None:
        return input_format
    return _BY_SUFFIX.get(Path(path).suffix.lower(), "text")


def input_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("file", pa.string()), ("row", pa.int64()), ("text", pa.string()),
                      ("text_pair", pa.string()), ("gold_label", pa.string()), ("input", pa.string()),
                      ("error", pa.string())])


def _row(file: str, row: int, obj: Any = None, *, text: str | None = None, error: str | None = None) -> dict[str, Any]:
    """One input row. ``obj``: a JSON/Parquet record (its ``text``, ``text_pair`` for sentence pairs, ``id``,
    ``label``; the rest kept as ``input``)."""
    rec: dict[str, Any] = {"id": f"{file}:{row}", "file": file, "row": row, "text": text, "text_pair": None,
                           "gold_label": None, "input": None, "error": error}
    if obj is None:
        return rec
    if not isinstance(obj, dict):
        rec["error"] = 'each JSONL line must be an object with a string "text"'
        return rec
    if obj.get("id") is not None:
        rec["id"] = str(obj["id"])
    if obj.get("label") is not None and obj.get("label") != "":
        rec["gold_label"] = str(obj["label"])
    rest = {k: v for k, v in obj.items() if k not in _KNOWN}
    if rest:
        rec["input"] = json.dumps(rest, ensure_ascii=False, default=str)
    if isinstance(obj.get("text"), str):
        rec["text"] = obj["text"]
    elif error is None:
        rec["error"] = 'no string "text" field'
    pair = obj.get("text_pair")
    if isinstance(pair, str):
        rec["text_pair"] = pair
    elif pair is not None and rec["error"] is None:
        rec["error"] = '"text_pair" must be a string'
    return rec


#: rows (lines) per block the reader makes: blocks are what Ray hands to actors, so small ones spread one file over
#: the whole pool (explaining a row costs far more than moving it) and a retry redoes little
ROWS_PER_BLOCK = 64


def _chunks(path: str, fmt: str, rows_per_block: int) -> list[dict[str, Any]]:
    """A file cut into pieces of ``rows_per_block`` lines (byte ranges, first line number), or Parquet row groups,
    on the driver: Ray turns each piece into its own block. Scanning lines is cheap next to explaining them."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        out, first = [], 1
        for g in range(meta.num_row_groups):
            out.append({"path": path, "format": fmt, "start": g, "end": g + 1, "first": first})
            first += meta.row_group(g).num_rows
        return out
    out, pos, start, first, n = [], 0, 0, 1, 0
    with open(path, "rb") as f:
        for raw in f:
            n += 1
            pos += len(raw)
            if n % rows_per_block == 0:
                out.append({"path": path, "format": fmt, "start": start, "end": pos, "first": first})
                start, first = pos, n + 1
    if pos > start:
        out.append({"path": path, "format": fmt, "start": start, "end": pos, "first": first})
    return out


def _read_lines(path: str, fmt: str, start: int = 0, end: int | None = None, first: int = 1) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
    for n, raw in enumerate(data.split(b"\n"), first):
        raw = raw.rstrip(b"\r")
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue  # blank lines (and the end of the last line) are skipped, but counted: "row" is the line number
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _row(path, n, error=f"line is not UTF-8 (byte {exc.start})")
            continue
        if fmt == "text":
            yield _row(path, n, text=line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _row(path, n, error=f"not valid JSON ({exc.msg})")
            continue
        yield _row(path, n, obj)


def _read_parquet(path: str, group: int | None = None, first: int = 1) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    n = first - 1
    for batch in pf.iter_batches(batch_size=1024, row_groups=None if group is None else [group]):
        for obj in batch.to_pylist():
            n += 1
            yield _row(path, n, obj)


def _read_pieces(batch: pa.Table) -> pa.Table:
    """map_batches over the pieces (:func:`_chunks`), one a call: that piece's rows. A file that cannot be opened
    raises (a missing file is not a bad row: its rows are unknown)."""
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for piece in batch.to_pylist():
        if piece["format"] == "parquet":
            rows += _read_parquet(piece["path"], piece["start"], piece["first"])
        else:
            rows += _read_lines(piece["path"], piece["format"], piece["start"], piece["end"], piece["first"])
    return pa.Table.from_pylist(rows, schema=input_schema())


def read_rows(files: Sequence[str], *, input_format: str | None = None, rows_per_block: int = ROWS_PER_BLOCK
              ) -> list[dict[str, Any]]:
    """The rows :func:`read_corpus` gives, read in this process (no Ray), in file and line order."""
    import pyarrow as pa

    pieces = [c for f in files for c in _chunks(f, _format_of(f, input_format), rows_per_block)]
    return [row for p in pieces for row in _read_pieces(pa.Table.from_pylist([p])).to_pylist()]


def read_corpus(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                input_format: str | None = None, rows_per_block: int = ROWS_PER_BLOCK) -> ray.data.Dataset:
    """A Ray Dataset of the texts in ``path`` (a file, a directory or a glob), read by Ray tasks in parallel.

    Each row: ``id`` (the input's ``id`` field as text, else ``FILE:ROW``), ``file``, ``row`` (1-based line number, or
    row number in a Parquet file; blank lines are skipped but counted), ``text``, ``gold_label`` (the input's
    ``label``), ``input`` (its other fields, a JSON object) and ``error`` (why a row has no text: not JSON, not UTF-8,
    no ``text`` field), so that no input row is ever dropped. Files must be at the same path on every node.

    input_format : ``"jsonl"``, ``"text"`` or ``"parquet"`` for every file; by default by suffix, else text.
    rows_per_block : lines per block (each block is read by one task and explained by one actor); a Parquet file
        gives one block per row group.
    """
    if input_format is not None and input_format not in INPUT_FORMATS:
        raise InputError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
    if rows_per_block < 1:
        raise InputError(f"rows_per_block must be >= 1, got {rows_per_block}")
    ray = _import_ray()
    pieces = [c for f in list_files(path) for c in _chunks(f, _format_of(f, input_format), rows_per_block)]
    if not pieces:
        raise InputError(f"{path} holds no rows")
    ds = ray.data.from_items(pieces, override_num_blocks=len(pieces))
    return ds.map_batches(_read_pieces, batch_size=1, batch_format="pyarrow", num_cpus=_IO_CPUS)


def _normalise(batch: pa.Table) -> pa.Table:
    """Any dataset with a ``text`` column -> the input columns (missing ones null, other columns kept as ``input``)."""
    import pyarrow as pa

    names = set(batch.column_names)
    if "text" not in names:
        raise InputError(f'the dataset needs a "text" column; it has {sorted(names)}')
    if set(INPUT_COLUMNS) <= names:
        return batch.select(list(INPUT_COLUMNS)).cast(input_schema())
    rows = batch.to_pylist()
    out = []
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in INPUT_COLUMNS and k != "label"}
        text, pair = r.get("text"), r.get("text_pair")
        out.append({"id": None if r.get("id") is None else str(r["id"]), "file": r.get("file"), "row": r.get("row"),
                    "text": text if isinstance(text, str) else None,
                    "text_pair": pair if isinstance(pair, str) else None,
                    "gold_label": None if r.get("label", r.get("gold_label")) is None else str(r.get("label", r.get("gold_label"))),
                    "input": r.get("input") or (json.dumps(extra, ensure_ascii=False, default=str) if extra else None),
                    "error": r.get("error") or (None if isinstance(text, str) else 'no string "text"')})
    return pa.Table.from_pylist(out, schema=input_schema())


# ---- the bundle on every node -----------------------------------------------------------------------------------
def _bundle_files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.rglob("*") if p.is_file())


def bundle_digest(bundle: str | os.PathLike[str]) -> str:
    """sha256 over the bundle's files (relative path and content), the identity a shipped copy is checked against."""
    root = Path(bundle)
    h = hashlib.sha256()
    for p in _bundle_files(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def _manifest_fingerprint(bundle: str | os.PathLike[str]) -> str | None:
    """A cheap identity (the manifest's bytes and every file's size) for checking that a node sees the same bundle."""
    root = Path(bundle)
    if not (root / "manifest.json").is_file():
        return None
    h = hashlib.sha256((root / "manifest.json").read_bytes())
    for p in _bundle_files(root):
        h.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}".encode())
    return h.hexdigest()


def ship_bundle(bundle: str | os.PathLike[str]) -> tuple[str, Any]:
    """Put the bundle's files in Ray's object store once: (digest, object ref of {relative path: bytes})."""
    ray = _import_ray()
    root = Path(bundle)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in _bundle_files(root)}
    return bundle_digest(root), ray.put(files)


def _shipped_dir() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "ray-bundles"


def materialise(digest: str, files: Mapping[str, bytes], into: Path | None = None) -> Path:
    """Write a shipped bundle under this node's cache (once per node: actors that race agree through a rename) and
    check it against ``digest``."""
    base = into or _shipped_dir()
    dest = base / digest
    if not dest.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=base))
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            os.rename(tmp, dest)
        except OSError:  # another actor on this node won the race
            shutil.rmtree(tmp, ignore_errors=True)
    got = bundle_digest(dest)
    if got != digest:
        raise BundleError(f"the shipped bundle at {dest} has sha256 {got[:12]}..., expected {digest[:12]}...: "
                          "delete that directory and rerun")
    return dest


def _node_sees(bundle: str, fingerprint: str | None) -> tuple[str, bool]:
    import ray

    return ray.util.get_node_ip_address(), _manifest_fingerprint(bundle) == fingerprint


def nodes_without_bundle(bundle: str | os.PathLike[str]) -> list[str]:
    """The addresses of the alive nodes that do not see this bundle (same path, same manifest and file sizes)."""
    ray = _import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    fp = _manifest_fingerprint(bundle)
    probe = ray.remote(num_cpus=0)(_node_sees)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        os.path.abspath(bundle), fp) for n in ray.nodes() if n.get("Alive")]
    return [ip for ip, ok in ray.get(refs) if not ok]


# ---- the actors -------------------------------------------------------------------------------------------------
def _make_explainer(model: Any, method: str, options: Mapping[str, Any]) -> Any:
    from ..registry import make_explainer

    return make_explainer(model, method, dict(options))


def output_schema(kind: str, labels: Sequence[str]) -> pa.Schema:
    """The output columns: the input's, then the result's (the JSON schema as Arrow types), then ``error``."""
    import pyarrow as pa

    probs = pa.struct([(lab, pa.float64()) for lab in labels])
    base = [f for f in input_schema() if f.name != "error"]
    if kind == "predict":
        fields = [("label", pa.string()), ("index", pa.int64()), ("probabilities", probs),
                  ("logits", pa.list_(pa.float64())), ("truncated", pa.bool_())]
    else:
        fields = [("method", pa.string()), ("label", pa.string()),
                  ("target", pa.struct([("index", pa.int64()), ("label", pa.string())])), ("probabilities", probs),
                  ("tokens", pa.list_(pa.string())), ("offsets", pa.list_(pa.list_(pa.int64()))),
                  ("segments", pa.list_(pa.int64())), ("scores", pa.list_(pa.float64())),
                  ("convergence_delta", pa.float64()), ("output", pa.string()),
                  ("output_value", pa.float64()), ("baseline_value", pa.float64()), ("settings", pa.string()),
                  ("truncated", pa.bool_()), ("warnings", pa.list_(pa.string()))]
    return pa.schema(base + [pa.field(n, t) for n, t in fields] + [pa.field("error", pa.string())])


@dataclass(frozen=True)
class WorkerConfig:
    """What each actor needs to load its bundle and build its explainer (pickled into the actor's constructor)."""

    kind: str  # "explain" or "predict"
    bundle: str
    fingerprint: str | None
    method: str | None
    options: dict[str, Any]
    target: str | None
    threads: int | None
    batch_size: int
    precision: str
    providers: list[Any] | None


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, XaiOnnxError) else f"{type(exc).__name__}: {exc}"


class _Worker:
    """One actor: a loaded bundle, called on pyarrow batches of input rows."""

    def __init__(self, config: dict[str, Any], shipped: list[Any] | None = None):
        from ..model import Model

        cfg = WorkerConfig(**config)
        if shipped is not None:  # [digest, ref]: a list, so that Ray hands the ref over unresolved
            import ray

            path = materialise(shipped[0], ray.get(shipped[1]))
        else:
            path = Path(cfg.bundle)
            if _manifest_fingerprint(path) != cfg.fingerprint:
                import ray

                seen = "is not there" if not (path / "manifest.json").is_file() else "differs from the driver's copy"
                raise BundleError(f"bundle {path} {seen} on node {ray.util.get_node_ip_address()}: copy it to the same "
                                  "path on every node, or ship it through the object store (--ship-bundle, "
                                  "ship_bundle=True)")
        self.cfg = cfg
        self.model = Model(path, threads=cfg.threads, batch_size=cfg.batch_size, precision=cfg.precision,
                           providers=cfg.providers)
        self.explainer = _make_explainer(self.model, str(cfg.method), cfg.options) if cfg.kind == "explain" else None
        self.schema = output_schema(cfg.kind, self.model.labels)
        self.per_text = len(self.model.labels) if cfg.kind == "explain" and cfg.target == "all" else 1

    def _results(self, texts: list[str], pairs: list[str | None] | None = None) -> list[dict[str, Any]]:
        """Results for ``texts`` in order, ``per_text`` a text; rows with a ``text_pair`` run as sentence pairs."""
        pairs = pairs or [None] * len(texts)
        singles = [k for k, p in enumerate(pairs) if p is None]
        coupled = [k for k, p in enumerate(pairs) if p is not None]
        got: dict[int, list[dict[str, Any]]] = {}
        for ks, text_pairs in ((singles, None), (coupled, [str(pairs[k]) for k in coupled])):
            if not ks:
                continue
            chunk = [texts[k] for k in ks]
            if self.explainer is None:
                results = [p.to_dict() for p in self.model.predict(chunk, text_pairs)]
            else:
                results = []
                for r in self.explainer.explain(chunk, target=self.cfg.target, text_pairs=text_pairs):
                    d = r.to_dict()
                    d["settings"] = json.dumps(d["settings"], default=str)
                    results.append(d)
            for j, k in enumerate(ks):
                got[k] = results[j * self.per_text:(j + 1) * self.per_text]
        return [d for k in range(len(texts)) for d in got[k]]

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        rows = batch.to_pylist()
        good = [i for i, r in enumerate(rows) if r["error"] is None]
        texts = [rows[i]["text"] for i in good]
        pairs = [rows[i].get("text_pair") for i in good]
        per: dict[int, list[dict[str, Any]] | str] = {}
        try:
            results = self._results(texts, pairs)
            for k, i in enumerate(good):
                per[i] = results[k * self.per_text:(k + 1) * self.per_text]
        except Exception:  # noqa: BLE001 - one bad text must not take its batch with it: retry them one by one
            for i in good:
                try:
                    per[i] = self._results([rows[i]["text"]], [rows[i].get("text_pair")])
                except Exception as exc:  # noqa: BLE001 - reported in the row's "error" column
                    per[i] = _error_text(exc)
        out: list[dict[str, Any]] = []
        method = self.cfg.method if self.cfg.kind == "explain" else None
        for i, r in enumerate(rows):
            base = {k: r[k] for k in INPUT_COLUMNS if k != "error"}
            got = per.get(i, r["error"])
            if isinstance(got, str) or got is None:
                out.append({**base, "method": method, "error": got})
                continue
            for d in got:
                d.pop("text", None)
                d.pop("text_pair", None)  # the input's own column
                out.append({**base, **d, "method": method, "error": None})
        return pa.Table.from_pylist(out, schema=self.schema)


def _map(ds: ray.data.Dataset, kind: str, bundle: str | os.PathLike[str], method: str | None, options: Mapping[str, Any],
         *, target: Any, workers: int, threads_per_worker: int | None, num_cpus: float | None, batch_rows: int,
         batch_size: int, retries: int, ship: bool | None, precision: str, providers: Sequence[Any] | None,
         resources: Mapping[str, float] | None) -> ray.data.Dataset:
    ray = _import_ray()
    from ..model import Model

    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise InputError(f"threads per worker must be >= 1, got {threads_per_worker}")
    if batch_rows < 1:
        raise InputError(f"batch_rows must be >= 1, got {batch_rows}")
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    # everything checked here, before any actor starts: the bundle, the method, its options, the target
    model = Model(os.fspath(bundle), threads=1, batch_size=batch_size, precision=precision, providers=providers)
    task = getattr(getattr(model, "task", None), "name", "sequence-classification")
    if task != "sequence-classification":
        raise InputError(f"the Ray engine runs sequence classifiers (single texts and pairs); bundle {model.path} is a {task} "
                         "model: use the local engine (without --engine ray)")
    if kind == "explain":
        ex = _make_explainer(model, str(method), options)
        if target is not None and target != "all":
            model.resolve_target(target)
        method = ex.name
    path = str(model.path.resolve())
    if ship is None:
        ship = bool(nodes_without_bundle(path))
    shipped = list(ship_bundle(path)) if ship else None
    config = WorkerConfig(kind=kind, bundle=path, fingerprint=_manifest_fingerprint(path), method=method,
                          options=dict(options), target=None if target is None else str(target),
                          threads=threads_per_worker, batch_size=batch_size, precision=precision,
                          providers=None if providers is None else list(providers))
    ds = ds.map_batches(_normalise, batch_format="pyarrow", num_cpus=_IO_CPUS)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ds.map_batches(
            _Worker, batch_size=batch_rows, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"config": asdict(config), "shipped": shipped},
            num_cpus=float(threads_per_worker or 1) if num_cpus is None else num_cpus,
            # an actor that dies (killed, out of memory, node lost) is restarted and its batches sent again
            max_restarts=retries, max_task_retries=retries, resources=None if resources is None else dict(resources))


def explain_dataset(ds: ray.data.Dataset, bundle: str | os.PathLike[str], method: str, *, target: Any = None,
                    workers: int = 1, threads_per_worker: int | None = 1, num_cpus: float | None = None,
                    batch_rows: int = 32, batch_size: int = 64, retries: int = 3, ship_bundle: bool | None = None,
                    precision: str = "float32", providers: Sequence[Any] | None = None,
                    resources: Mapping[str, float] | None = None, **options: Any) -> ray.data.Dataset:
    """Attributions for every row of ``ds`` (a dataset from :func:`read_corpus`, or any with a ``text`` column), lazily.

    method, options : as the CLI names them (``steps``, ``integration``, ``baseline``, ``output``, ``window`` ...),
        checked here before any actor starts.
    target : None (the predicted class), a label name or index, or ``"all"`` (one row per text and class).
    workers : actors in the pool, each holding one loaded bundle with ``threads_per_worker`` onnxruntime threads.
    num_cpus : CPUs each actor reserves from Ray (``threads_per_worker`` by default).
    batch_rows : input rows per actor call; batch_size : rows per onnxruntime call.
    retries : restarts of a dead actor, and resubmissions of the batch it held.
    ship_bundle : True to put the bundle in the object store once and materialise it on each node (checked by sha256);
        False to need it at the same path everywhere; None (default) ships only if some node does not see it.
    resources : Ray custom resources each actor needs (e.g. ``{"explain": 1}`` to keep actors on the nodes that
        declare that resource).

    Rows with a ``text_pair`` are explained as sentence pairs (NLI, cross-encoders), with ``segments`` per token.

    Returns a Dataset with the input columns (``id``, ``file``, ``row``, ``text``, ``text_pair``, ``gold_label``,
    ``input``), the result's (``method``, ``label``, ``target``, ``probabilities``, ``tokens``, ``offsets``,
    ``segments``, ``scores``, ``convergence_delta`` ...) and ``error`` (null, or why this row has no result). Row order
    is not kept: join on ``id``.
    """
    return _map(ds, "explain", bundle, method, options, target=target, workers=workers,
                threads_per_worker=threads_per_worker, num_cpus=num_cpus, batch_rows=batch_rows, batch_size=batch_size,
                retries=retries, ship=ship_bundle, precision=precision, providers=providers,
                resources=resources)


def predict_dataset(ds: ray.data.Dataset, bundle: str | os.PathLike[str], *, workers: int = 1,
                    threads_per_worker: int | None = 1, num_cpus: float | None = None, batch_rows: int = 256,
                    batch_size: int = 64, retries: int = 3, ship_bundle: bool | None = None,
                    providers: Sequence[Any] | None = None, resources: Mapping[str, float] | None = None
                    ) -> ray.data.Dataset:
    """Labels and probabilities for every row of ``ds``; the columns of :func:`explain_dataset` with the prediction's
    (``label``, ``index``, ``probabilities``, ``logits``, ``truncated``)."""
    return _map(ds, "predict", bundle, None, {}, target=None, workers=workers, threads_per_worker=threads_per_worker,
                num_cpus=num_cpus, batch_rows=batch_rows, batch_size=batch_size, retries=retries, ship=ship_bundle,
                precision="float32", providers=providers, resources=resources)


# ---- a whole run: read, explain, write, summarise --------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    rows_in: int
    rows_out: int
    errors: int
    seconds: float
    out: str
    out_format: str

    @property
    def texts_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "texts_per_second": round(self.texts_per_second, 3)}

    def line(self) -> str:
        return (f"{self.rows_in} rows in, {self.rows_out} rows out, {self.errors} errors, "
                f"{self.texts_per_second:.2f} texts/s ({self.seconds:.1f} s); written to {self.out} ({self.out_format})")


def _check_out(out: str) -> None:
    if "://" in out:
        return
    p = Path(out)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise InputError(f"output directory {out} exists and is not empty: give a new one (a rerun would mix its files "
                         "with the old ones)")


def _jsonl_sink(out: str) -> Any:
    """JSON Lines written with :func:`json.dumps` (pandas' writer would escape every ``/`` and turn lists into arrays)."""
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonlSink(BlockBasedFileDatasink):
        def __init__(self, path: str):
            super().__init__(path, file_format="jsonl")

        def write_block_to_file(self, block: Any, file: Any) -> None:
            lines = [json.dumps(row, ensure_ascii=False) for row in block.to_arrow().to_pylist()]
            file.write(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")

    return JsonlSink(out)


def write(ds: ray.data.Dataset, out: str, out_format: str = "parquet") -> None:
    """Write a result dataset as Parquet or JSONL files under ``out`` (one file per output block)."""
    if out_format == "parquet":
        ds.write_parquet(out, ray_remote_args={"num_cpus": _IO_CPUS})
    elif out_format == "jsonl":
        ds.write_datasink(_jsonl_sink(out), ray_remote_args={"num_cpus": _IO_CPUS})
    else:
        raise InputError(f"out format must be one of {', '.join(OUTPUT_FORMATS)}, got {out_format!r}")


def read_output(out: str, out_format: str = "parquet") -> ray.data.Dataset:
    ray = _import_ray()
    return ray.data.read_parquet(out) if out_format == "parquet" else ray.data.read_json(out, lines=True)


def run(input_path: str | Sequence[str], bundle: str | os.PathLike[str], out: str, *, kind: str = "explain",
        method: str | None = None, out_format: str = "parquet", input_format: str | None = None,
        rows_per_block: int = ROWS_PER_BLOCK, **kwargs: Any) -> Summary:
    """Read ``input_path``, explain (or predict) every row, write ``out``; the counts and the rate. Ray must be
    initialised (``ray.init``)."""
    if out_format not in OUTPUT_FORMATS:
        raise InputError(f"out format must be one of {', '.join(OUTPUT_FORMATS)}, got {out_format!r}")
    _check_out(out)
    ds = read_corpus(input_path, input_format=input_format, rows_per_block=rows_per_block)
    if kind == "explain":
        if method is None:
            raise InputError("give a method")
        result = explain_dataset(ds, bundle, method, **kwargs)
    else:
        result = predict_dataset(ds, bundle, **kwargs)
    start = time.perf_counter()
    write(result, out, out_format)
    seconds = time.perf_counter() - start
    rows_out = errors = 0
    for batch in read_output(out, out_format).select_columns(["error"]).iter_batches(batch_format="pyarrow"):
        col = batch.column("error")  # type: ignore[union-attr]  # a pyarrow.Table: batch_format="pyarrow"
        rows_out += len(col)
        errors += len(col) - col.null_count
    return Summary(rows_in=ds.count(), rows_out=rows_out, errors=errors, seconds=seconds, out=out, out_format=out_format)


# ---- the command line ---------------------------------------------------------------------------------------------
def _unwrap(exc: BaseException) -> XaiOnnxError | None:
    """The xai-onnx error inside a Ray error (an actor's constructor, a task), if there is one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, XaiOnnxError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    for cls in (BundleError, InputError):  # a remote error that only kept its text
        marker = f"{cls.__name__}: "
        text = str(exc)
        if marker in text:
            return cls(text.split(marker, 1)[1].split("\n", 1)[0])
    return None


def cli_run(args: Any, kind: str) -> int:
    """``xai-onnx explain|predict BUNDLE --engine ray --input PATH --out DIR``: a JSON summary on stdout."""
    import sys

    if getattr(args, "text", None) is not None or not args.input:
        raise InputError("--engine ray reads --input PATH (a file, a directory or a glob), not --text")
    if not args.out:
        raise InputError("--engine ray writes its rows to --out DIR")
    kwargs: dict[str, Any] = {"workers": args.workers or 1, "threads_per_worker": args.threads_per_worker or args.threads or 1,
                              "num_cpus": args.cpus_per_worker, "retries": 3 if args.retries is None else args.retries,
                              "ship_bundle": args.ship_bundle, "batch_size": args.batch_size, "providers": args.providers}
    method = None
    if kind == "explain":
        from ..registry import all_options, parse_methods

        methods = parse_methods(args.method)
        if len(methods) != 1:
            raise InputError(f"--engine ray runs one method at a time, got {', '.join(methods)}: run it once per method")
        method = methods[0]
        keys = all_options()
        kwargs.update({k: v for k, v in vars(args).items() if k in keys and v is not None})
        kwargs.update(target=args.target, precision=args.precision)
    _check_out(args.out)
    ray = _import_ray()
    ray.data.DataContext.get_current().enable_progress_bars = not getattr(args, "quiet", False)
    if not ray.is_initialized():
        ray.init(address=args.address, log_to_driver=False)
    try:
        summary = run(args.input, args.bundle, args.out, kind=kind, method=method, out_format=args.out_format or "parquet",
                      input_format=getattr(args, "input_format", None), **kwargs)
    except XaiOnnxError:
        raise
    except Exception as exc:
        inner = _unwrap(exc)
        if inner is not None:
            raise inner from None
        raise
    print(f"xai-onnx: {summary.line()}", file=sys.stderr)
    print(json.dumps(summary.to_dict()))
    return 0
