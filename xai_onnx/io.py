"""Reading the texts a user hands the CLI: plain text (one a line) or JSONL ({"text": ...})."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError


def read_texts(path: str | Path) -> list[str]:
    """Texts from a file: JSONL (``.jsonl``/``.json`` or lines starting with ``{``) or one text a line; blank lines skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file not found: {p}")
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 (byte {exc.start}): convert it, e.g. `iconv -t UTF-8`") from exc
    lines = [ln for ln in content.splitlines() if ln.strip()]
    jsonl = p.suffix.lower() in (".jsonl", ".json") or (bool(lines) and lines[0].lstrip().startswith("{"))
    if not jsonl:
        return lines
    texts = []
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f'{p}:{n}: each JSONL line must be an object with a string "text"')
        texts.append(obj["text"])
    return texts


def read_labelled(path: str | Path) -> list[tuple[str, str | None]]:
    """(text, label) pairs from JSONL (``text``, optional ``label``), CSV/TSV (``text`` and ``label`` columns), or the
    SST-2 format (``<label index> <text>`` a line). Told apart by extension, then content. Labels are returned as
    strings (a name or an index); None where a file has none."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise InputError(f"data file not found: {p}")
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 (byte {exc.start}): convert it, e.g. `iconv -t UTF-8`") from exc
    lines = [ln for ln in content.splitlines() if ln.strip()]
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json") or (lines and lines[0].lstrip().startswith("{")):
        out: list[tuple[str, str | None]] = []
        for n, line in enumerate(lines, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise InputError(f'{p}:{n}: each JSONL line must be an object with a string "text"')
            label = obj.get("label")
            out.append((obj["text"], None if label is None else str(label)))
        return out
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(content.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
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
