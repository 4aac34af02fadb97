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
