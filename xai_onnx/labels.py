"""Turning label names or indices from data files into class indices of a model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError


def label_indices(labels: Sequence[str | int | None], names: Sequence[str]) -> np.ndarray:
    """ndarray of shape (n,) of class indices; a label may be a name of ``names`` or an index into it."""
    out = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels):
        if lab is None:
            raise InputError(f"example {i} has no label: labelled data needs one per example")
        s = str(lab)
        if s in names:
            out[i] = list(names).index(s)
        elif s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
            out[i] = int(s)
        else:
            raise InputError(f"label {lab!r} of example {i} is not one of the model's labels {list(names)} "
                             f"(or an index below {len(names)})")
    return out
