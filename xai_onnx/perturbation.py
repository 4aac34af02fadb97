"""One perturbation layer: features of a tokenised text, masks over them, rows of token ids, and F on those rows.

A *feature* is a word (default) or a token; special tokens are never features. A mask (n_samples, n_features) of
booleans says which features are present; an absent feature's tokens are replaced by a baseline token with the
attention kept (``pad``, ``mask``, ``unk``), given a zero embedding (``zero``), or deleted (``delete``: the row gets
shorter, the vocabulary of ``evaluate --removal``). Rows go through :meth:`Model.run`, whose length-aware batch plan
puts the shorter rows of deletion into cheaper calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .model import Model, RowGroup
from .tokenization import Encoded

GRANULARITIES = ("word", "token")
MASKINGS = ("pad", "mask", "unk", "zero", "delete")


@dataclass(frozen=True)
class Features:
    """The features of one text.

    positions : per feature, the token positions it covers (ndarray of int64).
    spans : per feature, its (start, end) character offsets in the text.
    """

    encoded: Encoded
    granularity: str
    positions: tuple[np.ndarray, ...]
    spans: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(self.text(k) for k in range(len(self)))

    def text(self, k: int) -> str:
        """Feature k's text (offsets are into the text its tokens came from: the first text or the pair's second)."""
        e = self.encoded
        second = e.text_pair is not None and int(e.segment_ids()[self.positions[k][0]]) == 1
        a, b = self.spans[k]
        return (e.text_pair if second and e.text_pair is not None else e.text)[a:b]

    def token_matrix(self) -> np.ndarray:
        """ndarray of shape (n_features, n_tokens), 1.0 where a feature covers a token."""
        m = np.zeros((len(self), len(self.encoded)))
        for f, pos in enumerate(self.positions):
            m[f, pos] = 1.0
        return m


def word_groups(enc: Encoded) -> list[list[int]]:
    """Token positions of each word: consecutive non-special tokens whose character offsets touch (no whitespace
    between them) and that share a segment. A word piece is never split from its word."""
    groups: list[list[int]] = []
    prev_end, prev_type = -1, -1
    segments = enc.segment_ids()
    for i, ((a, b), special) in enumerate(zip(enc.offsets, enc.special)):
        if special:
            prev_end = -1
            continue
        t = int(segments[i])
        if groups and a == prev_end and t == prev_type and a != b:
            groups[-1].append(i)
        else:
            groups.append([i])
        prev_end, prev_type = b, t
    return groups


def features_of(enc: Encoded, granularity: str = "word") -> Features:
    """Words (tokens joined as :func:`word_groups` says) or tokens of a text; special tokens are never features."""
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "word":
        groups = word_groups(enc)
    else:
        groups = [[i] for i in np.flatnonzero(~enc.special).tolist()]
    positions = tuple(np.asarray(g, dtype=np.int64) for g in groups)
    spans = tuple((enc.offsets[g[0]][0], enc.offsets[g[-1]][1]) for g in groups)
    return Features(enc, granularity, positions, spans)


class Perturber:
    """Builds the rows of masked texts and evaluates F on them, batching every request of a call together.

    masking : ``pad``, ``mask``, ``unk`` (that token replaces the feature's tokens, attention kept), ``zero`` (zero
        embedding) or ``delete`` (tokens removed).
    """

    def __init__(self, model: Model, masking: str, batch_size: int | None = None):
        if masking not in MASKINGS:
            raise InputError(f"baseline must be one of {MASKINGS}, got {masking!r}")
        self.model = model
        self.masking = masking
        self.batch_size = batch_size
        self.fill = model.special_id(masking) if masking in ("pad", "mask", "unk") else None
        self.forward_rows: list[int] = []  # rows run per request by the last call of outputs()

    def groups(self, feats: Features, masks: np.ndarray) -> tuple[list[RowGroup], np.ndarray]:
        """RowGroups for masks (n, n_features) of booleans, and for each group row the index of its mask row."""
        enc = feats.encoded
        masks = np.asarray(masks, dtype=bool)
        n = masks.shape[0]
        if n == 0:
            return [], np.zeros(0, dtype=np.int64)
        absent = (~masks).astype(np.float64) @ feats.token_matrix() > 0  # (n, seq): tokens removed in each row
        if self.masking != "delete":
            if self.masking == "zero":
                embeds = np.repeat(self.model.embed(enc.ids)[None], n, axis=0)
                embeds[absent] = 0.0
            else:
                ids = np.repeat(enc.ids[None], n, axis=0)
                ids[absent] = self.fill
                embeds = self.model.embed(ids)  # (n, seq, dim)
            return [RowGroup(embeds, enc.type_ids)], np.arange(n)
        # deletion: rows of equal kept-token pattern length and segment ids share a group
        x = self.model.embed(enc.ids)
        buckets: dict[tuple[int, bytes], list[int]] = {}
        for r in range(n):
            keep = ~absent[r]
            buckets.setdefault((int(keep.sum()), enc.type_ids[keep].tobytes()), []).append(r)
        groups, order = [], []
        for rows in buckets.values():
            keep = ~absent[rows]  # (k, seq)
            length = int(keep[0].sum())
            idx = np.nonzero(keep)[1].reshape(len(rows), length)  # kept positions per row, in order
            groups.append(RowGroup(x[idx], enc.type_ids[idx[0]]))
            order.extend(rows)
        return groups, np.asarray(order, dtype=np.int64)

    def outputs(self, requests: Sequence[tuple[Features, np.ndarray]]) -> list[dict[str, np.ndarray] | None]:
        """The forward graph's outputs (``logits``, ``features``; rows in mask order) for each (features, masks)
        request, all in one batched run; None for a request without masks. A mask repeated within a request is run
        once (LIME draws many duplicates on short texts); :attr:`forward_rows` holds the rows run per request."""
        all_groups: list[RowGroup] = []
        layout = []
        self.forward_rows = []
        for feats, masks in requests:
            masks = np.asarray(masks, dtype=bool)
            inverse = None
            if masks.shape[0] > 1:
                _, first, inverse = np.unique(np.packbits(masks, axis=1), axis=0, return_index=True,
                                              return_inverse=True)
                masks = masks[first]
            gs, order = self.groups(feats, masks)
            layout.append((len(all_groups), len(gs), order, None if inverse is None else inverse.reshape(-1)))
            self.forward_rows.append(int(masks.shape[0]))
            all_groups.extend(gs)
        outs = self.model.run(all_groups, gradient=False, batch_size=self.batch_size) if all_groups else []
        results: list[dict[str, np.ndarray] | None] = []
        for start, count, order, inverse in layout:
            if not count:
                results.append(None)
                continue
            merged = {}
            for key in outs[start]:
                stacked = np.concatenate([outs[start + k][key] for k in range(count)])
                merged[key] = np.empty_like(stacked)
                merged[key][order] = stacked
                if inverse is not None:
                    merged[key] = merged[key][inverse]
            results.append(merged)
        return results

    def values(self, requests: Sequence[tuple[Features, np.ndarray]],
               objectives: Sequence[Callable[[dict[str, np.ndarray]], np.ndarray]]) -> list[np.ndarray]:
        """F (n_masks,) for each request, F given per request as a function of the graph's outputs."""
        return [np.zeros(0) if out is None else np.asarray(f(out), dtype=np.float64)
                for f, out in zip(objectives, self.outputs(requests))]
