"""Tokenisation with ``tokenizers``: truncation and padding set from the manifest, never from tokenizer.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import BundleError, InputError


@dataclass(frozen=True)
class Encoded:
    """One tokenised text.

    ids, type_ids: ndarray of shape (n_tokens,), int64. special: bool ndarray, True at special tokens.
    """

    text: str
    ids: np.ndarray
    type_ids: np.ndarray
    special: np.ndarray
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    truncated: bool

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class TextEncoder:
    def __init__(self, path: Path, max_length: int):
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on a bad file
            raise BundleError(f"cannot read tokenizer {path} ({exc}): the bundle is corrupt, re-export it") from exc
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.max_length = max_length

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self._tok.id_to_token(index)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        check_texts(texts)
        out = []
        for text, enc in zip(texts, self._tok.encode_batch(list(texts))):
            out.append(Encoded(
                text=text,
                ids=np.asarray(enc.ids, dtype=np.int64),
                type_ids=np.asarray(enc.type_ids, dtype=np.int64),
                special=np.asarray(enc.special_tokens_mask, dtype=bool),
                tokens=tuple(enc.tokens),
                offsets=tuple((int(a), int(b)) for a, b in enc.offsets),
                truncated=bool(enc.overflowing),
            ))
        return out


def check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not one string: wrap it in a list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}] is {type(t).__name__}, not str")
