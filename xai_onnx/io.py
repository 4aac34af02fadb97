"""Reading the files a user hands the CLI: texts (plain lines or JSONL) and labelled data (JSONL, CSV/TSV, SST-2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError


def _lines(path: str | Path, kind: str) -> tuple[Path, list[str], bool]:
    """The file's non-blank lines, and whether it is JSONL (by extension, or a first line starting with ``{``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{kind} file not found: {p}")
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 (byte {exc.start}): convert it, e.g. `iconv -t UTF-8`") from exc
    lines = [ln for ln in content.splitlines() if ln.strip()]
    jsonl = p.suffix.lower() in (".jsonl", ".json") or (bool(lines) and lines[0].lstrip().startswith("{"))
    return p, lines, jsonl


def _jsonl(p: Path, lines: list[str]) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f'{p}:{n}: each JSONL line must be an object with a string "text"')
        rows.append(obj)
    return rows


def read_texts(path: str | Path) -> list[str]:
    """Texts from a file: JSONL (``.jsonl``/``.json`` or lines starting with ``{``) or one text a line; blank lines skipped."""
    p, lines, jsonl = _lines(path, "input")
    return [row["text"] for row in _jsonl(p, lines)] if jsonl else lines


def read_labelled(path: str | Path) -> list[tuple[str, str | None]]:
    """(text, label) pairs from JSONL (``text``, optional ``label``), CSV/TSV (``text`` and ``label`` columns), or the
    SST-2 format (``<label index> <text>`` a line). Told apart by extension, then content. Labels are returned as
    strings (a name or an index); None where a file has none."""
    import csv

    p, lines, jsonl = _lines(path, "data")
    if jsonl:
        return [(row["text"], None if row.get("label") is None else str(row["label"])) for row in _jsonl(p, lines)]
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(lines, delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise InputError(f"{p}: a CSV/TSV file needs a header with a 'text' column (and 'label')")
        return [(row["text"], row.get("label")) for row in reader if row.get("text") is not None]
    pairs: list[tuple[str, str | None]] = []
    for n, line in enumerate(lines, 1):
        head, _, text = line.partition(" ")
        if not head.lstrip("-").isdigit() or not text:
            raise InputError(f"{p}:{n}: expected '<label index> <text>' (SST-2 format), JSONL, CSV or TSV")
        pairs.append((text, head))
    return pairs


def read_text_pairs(path: str | Path) -> tuple[list[str], list[str] | None]:
    """Texts, and their pair texts when every JSONL line has a string ``text_pair`` (None when none has one)."""
    p, lines, jsonl = _lines(path, "input")
    if not jsonl:
        return lines, None
    rows = _jsonl(p, lines)
    has = [isinstance(r.get("text_pair"), str) for r in rows]
    if any(has) and not all(has):
        n = has.index(False) + 1
        raise InputError(f'{p}: some lines have a "text_pair" and some do not (first without: line {n}): give every '
                         "line one, or none")
    return [r["text"] for r in rows], ([r["text_pair"] for r in rows] if rows and all(has) else None)
