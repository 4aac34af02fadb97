"""The ``xai-onnx`` command. Other packages add subcommands through the ``xai_onnx.commands`` entry-point group
(the exporter adds ``export``); a plugin is imported only when its subcommand runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from .errors import InputError, XaiOnnxError, install_hint
from .io import INPUT_FORMATS, Record, Records, read_records

EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser, formats: tuple[str, ...] = ("json", "text")) -> None:
    p.add_argument("bundle", help="bundle directory written by `xai-onnx export`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", action="extend", help="one or more texts (the flag may be repeated)")
    src.add_argument("--input", help="a text file (one text a line), JSONL with a \"text\" field (and \"text_pair\" for "
                     "sentence pairs), or CSV/TSV with a 'text' column; results carry each text's row (line number), id, "
                     "gold label and other fields")
    p.add_argument("--text-pair", nargs="+", action="extend", default=None, help="the second text of each pair, one "
                   "per --text (NLI, cross-encoders, similarity; the flag may be repeated)")
    p.add_argument("--format", choices=formats, default="json")
    _corpus_options(p)
    _runtime_options(p)


def _corpus_options(p: argparse.ArgumentParser, limit: bool = True) -> None:
    p.add_argument("--input-format", choices=INPUT_FORMATS, default=None,
                   help="how to read --input/--data/--train: text (one text a line), jsonl, csv, tsv, sst2 "
                   "('<label index> <text>' a line); default: by extension (.jsonl/.json, .csv, .tsv), else text "
                   "(--input) or sst2 (--data, --train)")
    if limit:
        p.add_argument("--limit", type=positive_int, default=None, help="the first N texts of the input only")


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", nargs="+", default=None, help="onnxruntime execution providers (default: CPU)")
    p.add_argument("--precision", choices=("float32", "int8"), default="float32",
                   help="gradient graph: float32 (default) or the int8 copy of a bundle exported with --int8")
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op threads (default: onnxruntime's)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="rows per onnxruntime call")


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {n}")
    return n


def port_number(value: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number (1 to 65535), got {value!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (1 to 65535), got {n}")
    return n


def utf8_argument(flag: str, value: str) -> str:
    """``value`` from argv, refused if it holds bytes that are not UTF-8 (Python keeps them as lone surrogates,
    which no tokenizer or JSON encoder accepts)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = value.encode("utf-8", "surrogateescape")
        at = len(value[:exc.start].encode("utf-8", "surrogateescape"))
        raise InputError(f"{flag} is not valid UTF-8 (byte 0x{raw[at]:02x} at byte {at}): pass UTF-8 text, "
                         "or put the texts in a UTF-8 file for --input") from None
    return value


def _utf8_values(flag: str, values: Sequence[str]) -> list[str]:
    return [utf8_argument(f"{flag} value {i + 1}" if len(values) > 1 else flag, t) for i, t in enumerate(values)]


def _note(msg: str) -> None:
    print(f"xai-onnx: note: {msg}", file=sys.stderr)


def _limited(args: argparse.Namespace, records: Records) -> Records:
    limit = getattr(args, "limit", None)
    if limit is None:
        return records
    if limit < 1:
        raise InputError(f"--limit must be >= 1, got {limit}")
    kept = records[:limit]
    last = kept[-1].row if kept and kept[-1].row is not None else None
    skipped = records.skipped_rows if last is None or len(kept) == len(records) else tuple(
        r for r in records.skipped_rows if r < last)  # only the blank lines among the rows kept
    return Records(kept, source=records.source, input_format=records.input_format, skipped_rows=skipped)


def _read(args: argparse.Namespace, path: str, *, data: bool = False, limited: bool = False) -> Records:
    """Records of an input file (--input; --data/--train with ``data``), after --limit with ``limited``, the blank
    lines skipped (among the rows kept) said on stderr."""
    recs = read_records(path, getattr(args, "input_format", None), default_format="sst2" if data else "text",
                        kind="data" if data else "input")
    if limited:
        recs = _limited(args, recs)
    note = recs.skipped_note()
    if note:
        _note(note)
    if not recs:
        _note(f"{path} holds no texts")
    return recs


def _records(args: argparse.Namespace) -> Records:
    """The texts of --text (no row numbers) or --input (with row, id, gold label and other fields), after --limit."""
    pairs = getattr(args, "text_pair", None)
    if args.text is not None:
        if pairs is not None and len(pairs) != len(args.text):
            raise InputError(f"{len(args.text)} --text and {len(pairs)} --text-pair: give one pair text per text")
        texts = _utf8_values("--text", args.text)
        pair_texts = None if pairs is None else _utf8_values("--text-pair", pairs)
        return _limited(args, Records([Record(row=None, text=t, text_pair=None if pair_texts is None else pair_texts[i])
                                       for i, t in enumerate(texts)], source="--text"))
    if pairs is not None:
        raise InputError("--text-pair goes with --text; in an --input JSONL file give each line a \"text_pair\"")
    return _read(args, args.input, limited=True)


def _texts(args: argparse.Namespace) -> list[str]:
    return _records(args).texts


def _text_pairs(records: Records) -> list[str] | None:
    """The records' ``text_pair`` fields when they have them (all or none), else None."""
    have = [r.text_pair is not None for r in records]
    if not any(have):
        return None
    if not all(have):
        missing = next(r.row for r, h in zip(records, have) if not h)
        raise InputError(f"{records.source}: row {missing} has no \"text_pair\" while others do: give one to every "
                         "record, or to none")
    return [r.text_pair or "" for r in records]


def with_input(result: dict[str, Any], record: Record | None) -> dict[str, Any]:
    """A result's JSON joined to its input: ``row`` and ``id`` first, then the result, then ``gold_label`` and
    ``input`` (the input's other fields). The one place corpus fields are carried into output."""
    if record is None:
        return result
    extra = record.output_fields()
    head: dict[str, Any] = {k: extra.pop(k) for k in ("row", "id") if k in extra}
    return {**head, **result, **extra}


def _model(args: argparse.Namespace):
    from .model import Model

    return Model(args.bundle, providers=args.providers, threads=args.threads, batch_size=args.batch_size,
                 precision=args.precision)


def _engine(args: argparse.Namespace, kind: str) -> int | None:
    """``--engine ray``: the run is handed to :mod:`xai_onnx.distributed.ray` (imported only then)."""
    from .distributed import check_local

    if args.engine == "ray":
        from .distributed.ray import cli_run

        return cli_run(args, kind)
    check_local(args)
    return None


def cmd_predict(args: argparse.Namespace) -> int:
    if (rc := _engine(args, "predict")) is not None:
        return rc
    model = _model(args)
    records = _records(args)
    preds = model.predict(records.texts, _text_pairs(records))
    if args.format == "json":
        print(json.dumps({"results": [with_input(p.to_dict(), rec) for p, rec in zip(preds, records)]}, ensure_ascii=False))
    else:
        for p in preds:
            text = p.text if p.text_pair is None else f"{p.text} || {p.text_pair}"
            if p.token_labels is not None:
                print(" ".join(f"{t}/{lab}" for t, lab in zip(p.tokens or (), p.token_labels)))
            elif p.score is not None and not p.probabilities:
                print(f"similarity {p.score:+.4f}  {text}")
            else:
                probs = "  ".join(f"{k}={v:.3f}" for k, v in p.probabilities.items())
                print(f"{p.label:<12} {probs}  {text}")
    return 0


def _format_text(r: Any, record: Record | None = None) -> str:
    where = ""
    if record is not None and record.row is not None:
        where = f"[row {record.row}" + (f", id {record.id}" if record.id is not None else "") + "] "
    from .results import TokenAttribution

    if isinstance(r, TokenAttribution):
        lines = [f"{where}{r.text!r}" + (f" || {r.text_pair!r}" if r.text_pair is not None else "") + f"\n  method {r.method}; "
                 "labels: " + " ".join(f"{t}/{lab}" for t, lab in zip(r.tokens, r.predicted))]
        for p in r.positions:
            delta = f"; convergence delta {p.convergence_delta:+.2e}" if p.convergence_delta is not None else ""
            lines.append(f"  position {p.position} {p.token!r} predicted {p.label}; target {p.target.label}{delta}")
            peak = max((abs(float(s)) for s in p.scores), default=0.0) or 1.0
            for tok, s in zip(r.tokens, p.scores):
                lines.append(f"    {tok:<16} {float(s):+.5f} {('+' if s >= 0 else '-') * int(round(10 * abs(float(s)) / peak))}")
        lines += [f"  note: {w}" for w in r.warnings]
        return "\n".join(lines)
    if r.text_pair is not None:
        r_text = f"{r.text!r} || {r.text_pair!r}"
    else:
        r_text = f"{r.text!r}"
    head = (f"{where}{r_text}\n  predicted {r.label} ({r.probabilities[r.label]:.3f}); target {r.target.label}; "
            f"method {r.method}" + (f"; convergence delta {r.convergence_delta:+.2e}" if r.convergence_delta is not None else "")
            + "".join(f"; side {s['segment']} delta {s['convergence_delta']:+.2e}" for s in (r.sides or ())
                      if s.get("convergence_delta") is not None))
    peak = max((abs(float(s)) for s in r.scores), default=0.0) or 1.0
    lines = [head]
    for tok, s in zip(r.tokens, r.scores):
        bar = ("+" if s >= 0 else "-") * int(round(10 * abs(float(s)) / peak))
        lines.append(f"  {tok:<16} {float(s):+.5f} {bar}")
    lines += [f"  note: {w}" for w in r.warnings]
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    if (rc := _engine(args, "explain")) is not None:
        return rc
    from .registry import make_explainer, parse_methods

    methods = parse_methods(args.method)  # before loading the model: a typo costs nothing
    model = _model(args)
    from .limits import Limits, check_work

    limits = Limits() if args.max_evaluations is None else Limits(max_evaluations=args.max_evaluations)
    if args.steps is not None and args.steps > limits.max_steps:  # the quadrature alone would hold memory and time
        raise InputError(f"--steps {args.steps} is over the limit of {limits.max_steps}")
    explainers = [make_explainer(model, m, vars(args)) for m in methods]  # every option checked before any work
    target = args.target  # a label name, an index as text, or "all": Model.resolve_target reads each
    from .progress import Progress

    records = _records(args)
    texts = records.texts
    pairs = _text_pairs(records)
    task_options = {}
    if model.manifest.task == "token-classification":
        task_options = {"positions": args.positions, "outside": args.outside}
    elif args.positions is not None or args.outside is not None:
        raise InputError(f"--positions and --outside apply to token-classification bundles; this one is {model.manifest.task}")
    check_work(model, explainers, texts, target, limits.max_evaluations, text_pairs=pairs, task_options=task_options)
    # results come in input order, per_text of them a text: one per class with --target all on a classifier
    per_text = len(model.labels) if target == "all" and model.manifest.task == "sequence-classification" else 1
    bar = Progress(len(texts) * per_text * len(explainers), "explain", enabled=False if args.quiet else None)
    results = []
    large_delta: dict[str, int] = {}
    for ex in explainers:
        # chunk by chunk, so a killed run keeps what it streamed
        for k, r in enumerate(ex.iter_explain(texts, target=target, text_pairs=pairs, **task_options)):
            bar.update()
            rec = records[k // per_text]
            if r.truncated and ex is explainers[0]:
                note = next((w for w in r.warnings if "truncated" in w), "text truncated")
                print(f"xai-onnx: note: {note}: {r.text[:40]!r}...", file=sys.stderr)
            if any(w.startswith("convergence delta") for w in r.warnings):
                large_delta[ex.name] = large_delta.get(ex.name, 0) + 1
            if args.format == "jsonl":
                print(json.dumps(with_input({"method": ex.name, **r.to_dict()}, rec), ensure_ascii=False), flush=True)
            elif args.format == "text":
                print(_format_text(r, rec) + "\n", flush=True)
            else:
                results.append((r, rec))
    bar.close()
    for name, n in large_delta.items():
        from .methods.integrated_gradients import DELTA_WARN_FRACTION

        _note(f"{name}: {n} of {len(texts) * per_text} result(s) have a convergence delta over {DELTA_WARN_FRACTION:.0%} "
              "of |F(x) - F(baseline)| (see their warnings): use more --steps or --adaptive")
    if args.format == "json":
        print(json.dumps({"method": args.method, "results": [with_input(r.to_dict(), rec) for r, rec in results]},
                         ensure_ascii=False))
    elif args.format == "html":
        from .html import render

        # group each text's methods together: render() keeps first-seen order of (text, target)
        print(render([r for r, _ in results], title=f"xai-onnx: {args.method} on {model_name(model)}"), end="")
    return 0


def model_name(model: Any) -> str:
    """What to call a bundle on a page: the manifest's name where it has one, else the bundle directory's name."""
    name = getattr(model.manifest, "name", None)
    return str(name) if name else model.path.name



def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import FaithfulnessEvaluator, evaluate_with_progress

    check_output(args.out, "--out")
    model = _model(args)
    records = _read(args, args.data, data=True, limited=True)
    from .registry import make_explainer, parse_methods

    names = parse_methods(args.methods)
    explainers = {name: make_explainer(model, name, {"output": args.output}) for name in names}
    evaluator = FaithfulnessEvaluator(model, removal=args.removal, output=args.output, random_state=args.random_state,
                                      segment=args.segment)
    report = evaluate_with_progress(evaluator, records.texts, explainers, text_pairs=_text_pairs(records),
                                    quiet=args.quiet)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    if args.format == "json":
        print(json.dumps(report.to_dict()))
    else:
        print(report.table())
        what = f"pairs, segment={report.settings['segment']}" if report.settings.get("pairs") else "texts"
        print(f"best by comprehensiveness: {report.best()}; {report.settings['n_texts']} {what}, removal={report.removal}")
    return 0


def check_output(path: str | None, what: str, *, directory: bool = False) -> None:
    """Refuse an output path that cannot be written before any work starts: an existing file where a directory goes
    (or the reverse), or a place this process cannot create files in."""
    import os
    import tempfile
    from pathlib import Path

    if path is None:
        return
    p = Path(path)
    if directory and p.exists() and not p.is_dir():
        raise InputError(f"{what} {p} exists and is not a directory: give a directory (it is created if missing)")
    if not directory and p.is_dir():
        raise InputError(f"{what} {p} is a directory: give a file name")
    parent = p if directory and p.is_dir() else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {p}: {parent} is not a directory")
    try:  # a real write, not os.access: root passes access checks on read-only filesystems
        fd, probe = tempfile.mkstemp(prefix=".xai-onnx-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {p}: cannot write to {parent} ({exc.strerror})") from exc


def _labelled(args: argparse.Namespace, path: str, what: str) -> tuple[list[str], list[str | None]]:
    recs = _read(args, path, data=True).singles(what)
    return recs.texts, recs.gold_labels


def _emit(args: argparse.Namespace, key: str, items: list[Any], text_line: Callable[[Any], str],
          records: Records | None = None, header: str | None = None) -> None:
    if args.format == "json":
        dicts = [i.to_dict() if hasattr(i, "to_dict") else i for i in items]
        if records is not None:
            dicts = [with_input(d, rec) for d, rec in zip(dicts, records)]
        print(json.dumps({key: dicts}, ensure_ascii=False))
    else:
        if header:
            print(header)
        print("\n".join(text_line(i) for i in items))


def cmd_attack(args: argparse.Namespace) -> int:
    from .adversarial import GreedySubstitution, HotFlip
    from .progress import Progress

    model = _model(args)
    constraints = {"max_flips": args.max_flips, "keep_stop_words": args.keep_stop_words,
                   "whole_words": not args.any_piece, "min_similarity": args.min_similarity}
    method = args.method or ("hotflip" if model.has_gradient else "greedy")
    attacker = HotFlip(model, **constraints) if method == "hotflip" else GreedySubstitution(model, **constraints)
    records = _records(args).singles("attack")
    bar = Progress(len(records), "attack", enabled=False if args.quiet else None)
    results = []
    for t in records.texts:
        results.append(attacker.attack([t])[0])
        bar.update()
    bar.close()
    _emit(args, "results", results, lambda r: (
        f"{'FLIPPED' if r.success else 'held  '} {r.label_before}->{r.label_after} "
        f"p({r.label_before}) {r.probability_before:.3f}->{r.label_before_probability_after:.3f}  {r.adversarial_text}"),
        records, header="# outcome, label before -> after the attack, p(label before): the ORIGINAL label's "
        "probability before -> after the attack (probability_before, label_before_probability_after in JSON), "
        "adversarial text")
    return 0


def cmd_influence(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .influence import InfluenceIndex

    load = bool(args.index and (Path(args.index) / "meta.json").is_file() and not args.train)
    if not load and not args.train:
        raise InputError("give --train FILE (or --index DIR of an index fitted earlier)")
    if args.index and not load:
        check_output(args.index, "--index", directory=True)
    records = _records(args).singles("influence")
    model = _model(args)
    train: Records | None = None
    if load:
        index = InfluenceIndex.load(model, args.index, k=args.k)
    else:
        train = _read(args, args.train, data=True).singles("influence")
        index = InfluenceIndex(model, k=args.k).fit(train.texts, train.gold_labels)
        if args.index:
            index.save(args.index)
    results = index.query(records.texts, k=args.k, mode=args.mode)

    def where(n: Any) -> dict[str, Any]:
        """The training example's line in --train and its id (unknown for an index loaded from --index)."""
        if train is None:
            return {}
        rec = train[n.index]
        return {"train_row": rec.row, **({"train_id": rec.id} if rec.id is not None else {})}

    def as_dict(r: Any) -> dict[str, Any]:
        d = r.to_dict()
        for key, ns in (("proponents", r.proponents), ("opponents", r.opponents)):
            d[key] = [{**nd, **where(n)} for nd, n in zip(d[key], ns)]
        return d

    def mark(n: Any) -> str:
        w = where(n)
        at = f" line {w['train_row']}" if w.get("train_row") is not None else ""
        return f"#{n.index}{at}{' id ' + str(w['train_id']) if 'train_id' in w else ''}"

    if args.mode == "tracin":
        header = ("# TracIn on the classification head: score = the dot product of the training example's loss gradient "
                  "and this text's (for its predicted label).\n# A positive score supports the prediction (training on "
                  "the example lowers this text's loss), a negative one opposes it.\n# proponents: the k highest "
                  "scores; opponents: the k lowest.")
        kinds = ("proponents (highest scores)", "opponents (lowest scores)")
    else:
        header = "# kNN: score = cosine similarity of the model's features."
        kinds = ("nearest", "farthest")
    header += ("\n# #N = the training example's index (0-based, \"index\" in JSON), then its line in the training file "
               "(\"train_row\") and its id (\"train_id\") where known; [label] its training label.")

    def lines(r: Any) -> str:
        return f"{r.text}  (predicted {r.label})\n" + "\n".join(
            [f"  {kinds[0]}:"] + [f"    {n.score:+.4f} {mark(n)} [{n.label}] {n.text}" for n in r.proponents]
            + [f"  {kinds[1]}:"] + [f"    {n.score:+.4f} {mark(n)} [{n.label}] {n.text}" for n in r.opponents])

    if args.format == "json":
        _emit(args, "results", [as_dict(r) for r in results], lines, records, header=header)
    else:
        _emit(args, "results", results, lines, records, header=header)
    return 0


def cmd_prototypes(args: argparse.Namespace) -> int:
    from .labels import label_indices
    from .prototypes import MMDCritic

    records = _read(args, args.data, data=True, limited=True).singles("prototypes")
    texts, labels = records.texts, records.gold_labels
    if not texts:
        raise InputError(f"{args.data} holds no examples")
    model = _model(args)
    model.require_features("prototypes")
    y = label_indices(labels, model.labels) if args.per_class else None
    feats = model.features(texts)
    critic = MMDCritic(n_prototypes=args.n_prototypes, n_criticisms=args.n_criticisms, per_class=args.per_class).fit(
        feats, y, model.labels)
    groups = []
    for g in critic.groups_:
        d = g.to_dict(texts)
        for kind in ("prototype", "criticism"):  # the input's row numbers (and ids), to join back to the file
            picked = [records[i] for i in d[f"{kind}s"]]
            d[f"{kind}_rows"] = [r.row for r in picked]
            if any(r.id is not None for r in picked):
                d[f"{kind}_ids"] = [r.id for r in picked]
        groups.append(d)
    _emit(args, "groups", groups, lambda g: f"[{g['label'] or 'all'}] sigma={g['sigma']:.3f}\n" + "\n".join(
        f"  prototype: {t}" for t in g["prototype_texts"]) + "\n" + "\n".join(
        f"  criticism: {t}" for t in g["criticism_texts"]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import debug_report

    check_output(args.out, "--out", directory=True)  # before the work, not after it
    records = _read(args, args.data, data=True, limited=True).singles("report")
    train = _labelled(args, args.train, "report") if args.train else None
    model = _model(args)
    say = (lambda m: None) if args.quiet else (lambda m: print(f"xai-onnx report: {m}", file=sys.stderr))
    rep = debug_report(model, records.texts, records.gold_labels, train=train, method=args.method, progress=say,
                       keep_stop_words=args.keep_stop_words)
    for m in rep["misclassified"]:  # join each error back to its input row (and id, other fields)
        rec = records[m["index"]]
        m.update({k: v for k, v in rec.output_fields().items() if k != "gold_label"})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False), encoding="utf-8")
    written = [out / "report.json"]
    if args.format == "html":
        from .html import render_report

        (out / "report.html").write_text(render_report(rep, title=f"xai-onnx report: {model_name(model)}",
                                                       source=records.source), encoding="utf-8")
        written.append(out / "report.html")
    if args.format == "json":
        print(json.dumps({"report": str(out / "report.json"), "accuracy": rep["accuracy"],
                          "misclassified": len(rep["misclassified"])}))
    else:
        print(f"accuracy {rep['accuracy']:.4f} on {rep['n']} examples; {len(rep['misclassified'])} misclassified")
        for lab, rows in rep["class_words"].items():
            print(f"  words towards {lab}: " + ", ".join(f"{r['word']} ({r['count']})" for r in rows[:10]))
        print("written: " + ", ".join(str(w) for w in written))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    from importlib.util import find_spec

    missing = [m for m in ("starlette", "uvicorn") if find_spec(m) is None]
    if missing:  # before loading the model and announcing an address
        raise XaiOnnxError(f"the service needs the serve extra ({', '.join(missing)} missing): {install_hint('serve')}")

    from .limits import MIB, Limits
    from .serve import API_KEY_ENV, serve

    limits = Limits(max_texts=args.max_texts, max_chars=args.max_chars, max_steps=args.max_steps,
                    max_evaluations=args.max_evaluations, memory_budget=args.memory_budget * MIB, timeout=args.timeout,
                    max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                    max_connections=args.max_connections, keep_alive=args.keep_alive,
                    header_timeout=args.header_timeout)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    from .model import Model

    model = Model(args.bundle, providers=args.providers, threads=args.threads, batch_size=args.batch_size,
                  precision=args.precision, memory_budget=limits.memory_budget)
    print(f"xai-onnx: serving {model.path} on http://{args.host}:{args.port}", file=sys.stderr)
    serve(model, host=args.host, port=args.port, limits=limits, api_key=api_key, allow_hosts=args.allow_host or (),
          quiet=args.quiet)
    return 0


def _limits_defaults() -> Any:
    from .limits import Limits

    return Limits()


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, metadata.EntryPoint]]:
    from .distributed import add_engine_arguments
    from .registry import add_method_arguments, method_names

    parser = argparse.ArgumentParser(prog="xai-onnx", description="Explain transformer text classifiers with onnxruntime.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="labels and probabilities")
    _common(p)
    add_engine_arguments(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("explain", help="token attributions")
    _common(p, formats=("json", "jsonl", "text", "html"))
    p.add_argument("--quiet", action="store_true", help="no progress bar (it shows only when stderr is a terminal)")
    p.add_argument("--method", required=True, help=f"one of {', '.join(method_names())}, or several comma-separated")
    p.add_argument("--target", default=None, help="label name or index, or 'all' (default: the predicted class)")
    p.add_argument("--positions", default=None, help="token classification: entities (default: every position whose "
                   "predicted label is not the outside label), all, or positions like 1,4")
    p.add_argument("--outside", default=None, help="token classification: the outside label (default O)")
    add_method_arguments(p, skip=("batch_size",))  # --batch-size is the model's (rows per onnxruntime call)
    p.add_argument("--max-evaluations", type=int, default=None, help="work budget: gradient or forward rows per "
                   f"text and method ({_limits_defaults().max_evaluations}); more is refused before any work")
    add_engine_arguments(p)
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("evaluate", help="faithfulness of each method: comprehensiveness, sufficiency, AOPC, tau")
    p.add_argument("bundle")
    p.add_argument("--data", required=True, help="JSONL, CSV/TSV or SST-2 format (labels are not needed)")
    p.add_argument("--methods", default="ig,saliency,grad_x_input,occlusion,fd", help="comma-separated")
    _corpus_options(p)
    p.add_argument("--removal", choices=("delete", "pad", "mask"), default="delete")
    p.add_argument("--segment", choices=("both", "text", "text_pair"), default="both",
                   help="sentence pairs (rows with text_pair): rank and remove the tokens of both texts (default), or "
                   "of the first or the second text only, the other kept whole")
    p.add_argument("--output", choices=("prob", "logit"), default="prob")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--format", choices=("json", "text"), default="text")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _runtime_options(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("attack", help="adversarial examples (HotFlip; greedy substitution without a gradient graph)")
    _common(p)
    p.add_argument("--method", choices=("hotflip", "greedy"), default=None)
    p.add_argument("--max-flips", type=int, default=3)
    p.add_argument("--keep-stop-words", action="store_true")
    p.add_argument("--any-piece", action="store_true", help="allow word pieces, not only whole-word vocabulary")
    p.add_argument("--min-similarity", type=float, default=None, help="minimum embedding cosine to the replaced token")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_attack)
    p = sub.add_parser("influence", help="influential training examples (TracIn on the head, or kNN)")
    _common(p)
    p.add_argument("--train", default=None, help="labelled training file")
    p.add_argument("--index", default=None, help="directory to save the fitted index to, or load it from")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--mode", choices=("tracin", "knn"), default="tracin")
    p.set_defaults(func=cmd_influence)
    p = sub.add_parser("prototypes", help="prototypes and criticisms (MMD-critic)")
    p.add_argument("bundle")
    p.add_argument("--data", required=True)
    p.add_argument("--per-class", action="store_true")
    p.add_argument("--n-prototypes", type=int, default=10)
    p.add_argument("--n-criticisms", type=int, default=5)
    p.add_argument("--format", choices=("json", "text"), default="json")
    _corpus_options(p)
    _runtime_options(p)
    p.set_defaults(func=cmd_prototypes)
    p = sub.add_parser("report", help="model-debugging report over a labelled corpus (JSON; --format html: a page)")
    p.add_argument("bundle")
    p.add_argument("--data", required=True, help="labelled data: JSONL, CSV/TSV or SST-2 format")
    p.add_argument("--train", default=None, help="labelled training data: adds prototypes and influence")
    p.add_argument("--out", required=True, help="directory to write report.json (and report.html) into")
    p.add_argument("--method", default=None, help="attribution method (ig, or occlusion without a gradient graph)")
    p.add_argument("--format", choices=("json", "text", "html"), default="text",
                   help="what to print; html also writes report.html, a page to read in a browser")
    p.add_argument("--keep-stop-words", action="store_true",
                   help="keep stop words and punctuation among the class words (left out by default)")
    p.add_argument("--quiet", action="store_true")
    _corpus_options(p)
    _runtime_options(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("serve", help="HTTP service (needs the serve extra)")
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port, 1 to 65535 (8000)")
    d = _limits_defaults()
    p.add_argument("--max-texts", type=positive_int, default=d.max_texts, help="texts per request (413 above)")
    p.add_argument("--max-chars", type=positive_int, default=d.max_chars, help="characters per text and baseline text (413 above)")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="IG steps (422 above)")
    p.add_argument("--max-evaluations", type=int, default=d.max_evaluations,
                   help="gradient or forward rows per text and method (422 above)")
    p.add_argument("--memory-budget", type=int, default=d.memory_budget // (1 << 20),
                   help="MiB of activations per onnxruntime call (sets the rows per call)")
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds per request (504 after; the work is cancelled)")
    p.add_argument("--max-concurrency", type=int, default=d.max_concurrency, help="requests computing at once")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="requests waiting for a worker (503 beyond)")
    p.add_argument("--max-connections", type=int, default=d.max_connections, help="open connections (more are closed)")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive, help="seconds an idle connection stays open")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds a client has to send a whole request once it starts one")
    p.add_argument("--api-key", default=None, help="bearer token every endpoint but /health requires "
                   "(default: $XAI_ONNX_API_KEY; unset: none)")
    p.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                   help="a Host header name to accept besides the bound address (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no request log on stderr")
    _runtime_options(p)
    p.set_defaults(func=cmd_serve)
    plugins = {}
    for ep in metadata.entry_points(group="xai_onnx.commands"):
        if ep.name not in sub.choices:
            plugins[ep.name] = ep
            q = sub.add_parser(ep.name, help=f"(plugin: run `xai-onnx {ep.name} --help`)", add_help=False)
            q.add_argument("rest", nargs=argparse.REMAINDER)
    return parser, plugins


def _run(func: Callable[[], int]) -> int:
    try:
        return func()
    except XaiOnnxError as exc:
        print(f"xai-onnx: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xai-onnx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI reports, never dumps a traceback
        print(f"xai-onnx: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, plugins = build_parser()
    if argv and argv[0] in plugins:
        ep = plugins[argv[0]]

        def plugin() -> int:
            try:
                entry = ep.load()
            except ImportError as exc:
                print(f"xai-onnx: error: `{argv[0]}` needs extra packages ({exc.name or exc}): "
                      f"{install_hint(argv[0])}", file=sys.stderr)
                return EXIT_USAGE
            return int(entry(argv[1:]))

        return _run(plugin)
    args = parser.parse_args(argv)
    return _run(lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
