"""What the model-agnostic methods (LIME, KernelSHAP, Partition SHAP) share: features, masking, options, results.

They need forward passes only, so they run on forward-only bundles too. Features are words by default (a word's
pieces are never split), or tokens; special tokens are never features and are always kept.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from typing import Any

import numpy as np

from ..errors import InputError
from ..model import Model
from ..perturbation import GRANULARITIES, MASKINGS, Features, Perturber, features_of
from ..registry import Option
from .base import OUTPUT, Computed, Explainer, Item, batch_option

MASKING = Option("baseline", str, "pad", "what a masked feature's tokens become: pad, mask or unk (that token, attention "
                 "kept), zero (a zero embedding) or delete (removed: the row gets shorter)", choices=MASKINGS)
GRANULARITY = Option("granularity", str, None, "features and results per word (word pieces merged) or per token; "
                     "default: word (token for token classification)", choices=GRANULARITIES)
RANDOM_STATE = Option("random_state", int, 0, "seed of the sampling: the same seed gives the same scores",
                      minimum=0, maximum=2**63 - 1)


def samples_option(default: int, help_text: str) -> Option:
    return Option("samples", int, default, help_text, minimum=1, maximum=1 << 24)


def item_rng(random_state: int, item: Item) -> np.random.Generator:
    """The generator of one (text, target): seeded by the seed, the text and the target, so that a text's scores do
    not depend on the other texts of the call, their order or the chunking."""
    return np.random.default_rng([random_state, zlib.crc32(item.encoded.text.encode("utf-8")), item.target])


class PerturbationExplainer(Explainer):
    """Base class of the methods that explain by evaluating F on masked copies of the text.

    Subclasses implement :meth:`attribute`, which returns per-feature scores; results hold them per token (token
    granularity) or per word (word granularity, ``Attribution.granularity == "word"``).
    """

    needs_gradient = False

    def __init__(self, model: Model, *, samples: int, random_state: int, granularity: str | None, baseline: str,
                 output: str | None, batch_size: int | None):
        masking = MASKING.parse(baseline, method=self.name)
        token_task = model.manifest.task == "token-classification"
        if token_task and masking == "delete":
            raise InputError("baseline 'delete' shifts the explained positions of a token classifier: use pad, mask, "
                             "unk or zero")
        if granularity is None:
            granularity = "token" if token_task else "word"
        # the base class knows replacement baselines only; deletion builds no baseline embedding
        super().__init__(model, baseline="pad" if masking in ("delete", "zero") else masking, output=output,
                         batch_size=batch_size, granularity=granularity)
        self.baseline = masking
        self.samples = self._parse("samples", samples)
        self.random_state = self._parse("random_state", random_state)
        self.perturber = Perturber(model, masking, self.batch_size)

    def baseline_embeds(self, enc: Any, x: np.ndarray) -> np.ndarray:
        return x  # unused: masked rows are built from token ids by the Perturber

    def compute(self, items: list[Item]) -> list[Computed]:
        feats = [features_of(it.encoded, self.granularity) for it in items]
        out = []
        for f, it, c in zip(feats, items, self.attribute(items, feats, [item_rng(self.random_state, it) for it in items])):
            # a feature's score goes to its first token (the others get 0): the word merge of every result shape
            # (texts, pairs, similarity sides, token positions) sums a word's tokens, which gives it back exactly
            token_scores = np.zeros(len(it.encoded))
            for pos, score in zip(f.positions, c.scores):
                token_scores[pos[0]] = score
            out.append(Computed(token_scores, c.convergence_delta, c.settings))
        return out

    @abstractmethod
    def attribute(self, items: list[Item], feats: list[Features], rngs: list[np.random.Generator]) -> list[Computed]:
        """Per item, Computed whose scores are per feature (n_features,)."""

    def values(self, items: list[Item], feats: list[Features], masks: list[np.ndarray]) -> list[np.ndarray]:
        """F (n,) of each item's masked rows (masks: (n, n_features) booleans, True = present), one batched run."""
        return self.perturber.values(list(zip(feats, masks)), [it.value for it in items])

    @staticmethod
    def common_options(samples: Option) -> tuple[Option, ...]:
        return (samples, RANDOM_STATE, GRANULARITY, MASKING, OUTPUT, batch_option())
