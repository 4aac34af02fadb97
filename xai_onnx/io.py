"""Reading the files a user hands the CLI: texts (plain lines, JSONL, CSV/TSV) and labelled data (JSONL, CSV/TSV,
SST-2), as :class:`Record` objects that remember where each text came from so that output joins back to input."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

#: ``--input-format`` choices. ``text``: one text a line; ``sst2``: ``<label index> <text>`` a line.
INPUT_FORMATS = ("text", "jsonl", "csv", "tsv", "sst2")
_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
#: input fields a Record takes apart; every other field is kept in ``Record.fields``
_KNOWN = ("text", "text_pair", "id", "label")


@dataclass(frozen=True)
class Record:
    """One input text and where it came from.

    row : 1-based line number in the input file (for CSV/TSV, the line the record starts on; the header is line 1);
        None for texts given on the command line.
    text, text_pair : the text (and, for pair tasks, its second text: JSONL/CSV field ``text_pair``).
    id : the input's ``id`` field, if any, as given.
    gold_label : the input's ``label`` (a name or an index, as a string), if any.
    fields : every other input field, as given.
    """

    row: int | None
    text: str
    text_pair: str | None = None
    id: Any = None
    gold_label: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def output_fields(self) -> dict[str, Any]:
        """The keys a result carries to join it back to its input: ``row``, and ``id``, ``gold_label`` and ``input``
        (the other input fields) where the input had them."""
        out: dict[str, Any] = {}
        if self.row is not None:
            out["row"] = self.row
        if self.id is not None:
            out["id"] = self.id
        if self.gold_label is not None:
            out["gold_label"] = self.gold_label
        if self.fields:
            out["input"] = dict(self.fields)
        return out


class Records(list[Record]):
    """The records of one file, in input order, and the row numbers of the blank lines that were skipped."""

    def __init__(self, records: Iterable[Record] = (), *, source: str = "", input_format: str = "",
                 skipped_rows: tuple[int, ...] = ()):
        super().__init__(records)
        self.source, self.input_format, self.skipped_rows = source, input_format, skipped_rows

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self]

    @property
    def gold_labels(self) -> list[str | None]:
        return [r.gold_label for r in self]

    def singles(self, what: str) -> Records:
        """These records, or InputError where one has a ``text_pair``: ``what`` reads single texts, and dropping the
        second text would explain something else than the model was given."""
        rec = next((r for r in self if r.text_pair is not None), None)
        if rec is not None:
            where = f"{self.source} line {rec.row}" if rec.row is not None else self.source
            raise InputError(f"{what} reads single texts, and {where} has a \"text_pair\": sentence pairs work with "
                             "explain, predict and evaluate")
        return self

    def skipped_note(self) -> str | None:
        """A one-line note on the blank lines skipped, or None."""
        if not self.skipped_rows:
            return None
        rows = ", ".join(str(r) for r in self.skipped_rows[:10]) + (", ..." if len(self.skipped_rows) > 10 else "")
        return (f"skipped {len(self.skipped_rows)} blank line(s) in {self.source} (line {rows}); "
                "each result's \"row\" is its line number in the file")


def split_lines(content: str) -> list[str]:
    """Lines split on ``\\n`` only (a trailing ``\\r`` dropped): JSON strings may hold U+2028, U+2029, U+0085 or a form
    feed, which ``str.splitlines`` would also split on."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read(path: str | Path, kind: str) -> tuple[Path, str]:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{kind} {p} is a directory: give a file")
    if not p.exists():
        raise InputError(f"{kind} file not found: {p}")
    try:  # not is_file(): /dev/null, /dev/stdin and <(process substitution) are fine to read
        with open(p, encoding="utf-8", newline="") as f:
            content = f.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 (byte {exc.start}): convert it, e.g. `iconv -t UTF-8`") from exc
    except OSError as exc:
        raise InputError(f"cannot read {kind} file {p} ({exc.strerror})") from exc
    return p, content[1:] if content.startswith("\ufeff") else content


def detect_format(path: str | Path, input_format: str | None = None, *, default: str = "text") -> str:
    """The format of ``path``: ``input_format`` if given, else by extension (``.jsonl``/``.json``/``.ndjson``,
    ``.csv``, ``.tsv``), else ``default``. Never by content: a text whose first line starts with ``{`` is a text."""
    if input_format is not None:
        if input_format not in INPUT_FORMATS:
            raise InputError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
        return input_format
    return _BY_SUFFIX.get(Path(path).suffix.lower(), default)


def _record(obj: dict[str, Any], row: int, where: str) -> Record:
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(f'{where}: each record needs a string "text" field')
    pair = obj.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise InputError(f'{where}: "text_pair" must be a string')
    label = obj.get("label")
    return Record(row=row, text=text, text_pair=pair, id=obj.get("id"),
                  gold_label=None if label is None or label == "" else str(label),
                  fields={k: v for k, v in obj.items() if k not in _KNOWN})


def _looks_like_jsonl(lines: list[str]) -> bool:
    first = next((ln for ln in lines if ln.strip()), "")
    return first.lstrip().startswith("{")


def read_records(path: str | Path, input_format: str | None = None, *, default_format: str = "text",
                 kind: str = "input") -> Records:
    """The records of a file, in order. Blank lines are skipped but counted: each record's ``row`` is its line number
    (``Records.skipped_rows`` lists the blank ones).

    input_format : one of :data:`INPUT_FORMATS`, or None to decide by extension (then ``default_format``).
    """
    fmt = detect_format(path, input_format, default=default_format)
    p, content = _read(path, kind)
    skipped: list[int] = []
    records: list[Record] = []
    if fmt in ("csv", "tsv"):
        reader = csv.reader(io.StringIO(content, newline=""), delimiter="\t" if fmt == "tsv" else ",")
        header = next(reader, None)
        if not header or "text" not in header:
            raise InputError(f"{p}: a {fmt.upper()} file needs a header row with a 'text' column (and 'label', 'id' ...)")
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InputError(f"{p}:{start}: not valid {fmt.upper()} ({exc})") from exc
            if not values or all(not v.strip() for v in values):
                skipped.append(start)
                continue
            if len(values) != len(header):
                raise InputError(f"{p}:{start}: {len(values)} columns where the header has {len(header)}")
            records.append(_record(dict(zip(header, values)), start, f"{p}:{start}"))
        return Records(records, source=str(p), input_format=fmt, skipped_rows=tuple(skipped))
    lines = split_lines(content)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            skipped.append(n)
            continue
        if fmt == "jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise InputError(f'{p}:{n}: each JSONL line must be an object with a string "text"')
            records.append(_record(obj, n, f"{p}:{n}"))
        elif fmt == "sst2":
            head, _, text = line.partition(" ")
            if not head.lstrip("-").isdigit() or not text:
                hint = (" (it looks like JSONL: name it .jsonl or pass --input-format jsonl)" if _looks_like_jsonl(lines)
                        else "")
                raise InputError(f"{p}:{n}: expected '<label index> <text>' (SST-2 format), or JSONL, CSV or TSV by "
                                 f"extension or --input-format{hint}")
            records.append(Record(row=n, text=text, gold_label=head))
        else:
            records.append(Record(row=n, text=line))
    return Records(records, source=str(p), input_format=fmt, skipped_rows=tuple(skipped))


def read_texts(path: str | Path, input_format: str | None = None) -> list[str]:
    """Texts from a file: JSONL (``.jsonl``/``.json``), CSV/TSV with a ``text`` column, or one text a line (blank
    lines skipped). See :func:`read_records` for the rows, ids and labels."""
    return read_records(path, input_format).texts


def read_labelled(path: str | Path, input_format: str | None = None) -> list[tuple[str, str | None]]:
    """(text, label) pairs from JSONL (``text``, optional ``label``), CSV/TSV (``text`` and ``label`` columns), or the
    SST-2 format (``<label index> <text>`` a line), told apart by extension (else SST-2) or ``input_format``. Labels
    are strings (a name or an index); None where a record has none."""
    return [(r.text, r.gold_label) for r in read_records(path, input_format, default_format="sst2", kind="data")]

