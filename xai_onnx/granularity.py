"""Word granularity for any attribution: word pieces merged into the words they came from.

Additive methods (IG, gradient x input, occlusion, finite differences, LIME, SHAP at token level) sum their tokens'
scores, so a word's score keeps their meaning (IG's completeness holds for words too); saliency, a gradient norm,
takes the L2 norm over the word's tokens (the norm of the word's stacked gradients). Special tokens are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .results import Attribution

MERGES = ("sum", "norm")


def word_groups_from_offsets(offsets: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token positions of each word from the offsets alone: tokens with a non-empty span whose offsets touch the
    previous token's (no whitespace between) join its word. Tokens with an empty span (special tokens) are dropped."""
    groups: list[list[int]] = []
    prev_end = -1
    for i, (a, b) in enumerate(offsets):
        if a == b:
            prev_end = -1
            continue
        if groups and a == prev_end:
            groups[-1].append(i)
        else:
            groups.append([i])
        prev_end = b
    return groups


def to_words(attr: Attribution, *, merge: str = "sum", groups: Sequence[Sequence[int]] | None = None,
             word_scores: np.ndarray | None = None) -> Attribution:
    """``attr`` at word granularity: ``tokens`` become the words' texts, ``offsets`` their character spans and
    ``scores`` one per word (``merge``: ``"sum"`` or ``"norm"`` of the word's token scores, or ``word_scores`` where a
    method scored the words themselves). ``groups``: the token positions of each word (by default from the offsets,
    see :func:`word_groups_from_offsets`)."""
    if attr.granularity == "word":
        return attr
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    groups = [list(g) for g in (groups if groups is not None else word_groups_from_offsets(attr.offsets))]
    spans = tuple((attr.offsets[g[0]][0], attr.offsets[g[-1]][1]) for g in groups)
    segments = None if attr.segments is None else tuple(attr.segments[g[0]] for g in groups)
    texts = tuple((attr.text_pair if segments is not None and segments[k] == 1 and attr.text_pair is not None
                   else attr.text)[a:b] for k, (a, b) in enumerate(spans))  # offsets are into the token's own text
    if word_scores is None:
        s = np.asarray(attr.scores, dtype=np.float64)
        word_scores = np.array([float(np.linalg.norm(s[g])) if merge == "norm" else float(s[g].sum()) for g in groups])
    else:
        word_scores = np.asarray(word_scores, dtype=np.float64)
        if word_scores.shape != (len(groups),):
            raise ValueError(f"word_scores has shape {word_scores.shape}, expected ({len(groups)},)")
    return dataclasses.replace(attr, tokens=texts, offsets=spans, scores=word_scores, segments=segments,
                               granularity="word")
