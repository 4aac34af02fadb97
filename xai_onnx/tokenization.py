"""Tokenisation with ``tokenizers``: truncation and padding set from the manifest, never from tokenizer.json."""

from __future__ import annotations

import json
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
    segments: ndarray of shape (n_tokens,), int64: 0 for the first text's tokens, 1 for the second's (pairs), -1 for
    special tokens. offsets: character spans into the token's own text.
    """

    text: str
    ids: np.ndarray
    type_ids: np.ndarray
    special: np.ndarray
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    truncated: bool
    text_pair: str | None = None
    segments: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def segment_ids(self) -> np.ndarray:
        """Per token: 0 or 1 (which text), -1 for special tokens."""
        if self.segments is not None:
            return self.segments
        return np.where(self.special, -1, 0).astype(np.int64)

    def segment_list(self) -> list[int | None]:
        return [None if s < 0 else int(s) for s in self.segment_ids()]


class TextEncoder:
    def __init__(self, path: Path, max_length: int):
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on a bad file
            raise BundleError(f"cannot read tokenizer {path} ({exc}): the bundle is corrupt, re-export it") from exc
        self._tok.no_padding()
        # user text is text: "[CLS]" or "<s>" typed in it is tokenised like any other characters, never matched as
        # the special token (the post-processor still adds the real ones)
        self._tok.encode_special_tokens = True
        self._unk_id = _unk_id(self._tok)
        self._special_ids = np.array(sorted(i for i, t in self._tok.get_added_tokens_decoder().items()
                                            if t.special and i != self._unk_id), dtype=np.int64)
        # longest_first: a pair loses tokens from its longer text first (as transformers' default does)
        self._tok.enable_truncation(max_length, strategy="longest_first")
        self.max_length = max_length

    def num_special_tokens(self) -> int:
        """Special tokens the tokenizer adds around one text."""
        return int(self._tok.num_special_tokens_to_add(False))

    def largest_id(self) -> int:
        """The largest id the tokenizer can give (vocabulary and added tokens)."""
        return max(self._tok.get_vocab(with_added_tokens=True).values(), default=-1)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self._tok.id_to_token(index)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Encoded]:
        """Tokenise texts, or (text, pair) couples when ``pairs`` is given (the tokenizer's own pair template:
        separators and token type ids as the model was trained with)."""
        check_texts(texts)
        if pairs is None:
            encodings = self._tok.encode_batch(list(texts))
        else:
            check_texts(pairs, "text_pairs")
            if len(pairs) != len(texts):
                raise InputError(f"{len(texts)} texts and {len(pairs)} text pairs: give one pair text per text")
            encodings = self._tok.encode_batch(list(zip(texts, pairs)))
        out = []
        for i, (text, enc) in enumerate(zip(texts, encodings)):
            special = np.asarray(enc.special_tokens_mask, dtype=bool)
            seq_ids = enc.sequence_ids
            segments = np.array([-1 if (sid is None or sp) else int(sid) for sid, sp in zip(seq_ids, special)],
                                dtype=np.int64)
            out.append(Encoded(
                text=text,
                ids=self.plain_ids(np.asarray(enc.ids, dtype=np.int64), special),
                type_ids=np.asarray(enc.type_ids, dtype=np.int64),
                special=special,
                tokens=tuple(enc.tokens),
                offsets=tuple((int(a), int(b)) for a, b in enc.offsets),
                truncated=bool(enc.overflowing),
                text_pair=None if pairs is None else pairs[i],
                segments=segments,
            ))
        return out

    def plain_ids(self, ids: np.ndarray, special: np.ndarray) -> np.ndarray:
        """``ids`` with every position of user text that still carries a special token's id (a Unigram vocabulary
        can hold ``<s>`` as an ordinary piece) set to the unknown token's id: user text never reaches the model as
        a separator, padding, mask or sequence start. ``special``: the tokenizer's special-tokens mask. The unknown
        token is the one special token user text may produce (for characters the vocabulary lacks)."""
        leak = ~special & np.isin(ids, self._special_ids)
        if leak.any():
            if self._unk_id is None:
                raise InputError(f"the text holds {self.id_to_token(int(ids[leak][0]))!r}, which this tokenizer (without "
                                 "an unknown token) can only read as a special token: remove it from the text")
            ids = ids.copy()
            ids[leak] = self._unk_id
        return ids


def _unk_id(tok: Tokenizer) -> int | None:
    """The id of the tokenizer model's unknown token, if it has one."""
    model = json.loads(tok.to_str()).get("model", {})
    if isinstance(model.get("unk_id"), int):  # Unigram
        return int(model["unk_id"])
    unk = model.get("unk_token")
    return tok.token_to_id(unk) if isinstance(unk, str) else None


def check_texts(texts: Sequence[str], name: str = "texts") -> None:
    if isinstance(texts, str):
        raise InputError(f"{name} must be a sequence of strings, not one string: wrap it in a list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{name}[{i}] is {type(t).__name__}, not str")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: invalid UTF-8 decoded with surrogateescape, or bad JSON
            raise InputError(f"{name}[{i}] is not valid Unicode: a lone surrogate (U+{ord(t[exc.start]):04X}) at "
                             f"character {exc.start}; was it read from bytes that are not UTF-8?") from None
