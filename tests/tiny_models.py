"""Tiny random-weight Hugging Face models built from configs (no hub access), one per supported architecture."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("the a an movie film is was very not good bad great awful fun boring dull , . ! i it and but "
         "plot acting story best worst love hate").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_POS = 40
LABELS = {0: "neg", 1: "neu", 2: "pos"}


def _tokenizer(d: Path):
    from transformers import BertTokenizerFast

    (d / "vocab.txt").write_text("\n".join(SPECIALS + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    tok.save_pretrained(d)
    return tok


def _config(arch: str, labels: dict[int, str] | None = None, head: str = "SequenceClassification"):
    """(config, model class) of a tiny ``arch`` with ``labels`` (default LABELS) and the given head."""
    import transformers as tf

    config, cls = _seq_config(arch, labels or LABELS)
    return config, getattr(tf, cls.__name__.replace("SequenceClassification", head))


def _seq_config(arch: str, labels: dict[int, str]):
    import transformers as tf

    LABELS = labels  # noqa: N806 - the name the configs below read
    common = dict(vocab_size=80, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=36,
                  max_position_embeddings=MAX_POS, num_labels=len(LABELS), id2label=LABELS,
                  label2id={v: k for k, v in LABELS.items()})
    if arch == "bert":
        return tf.BertConfig(**common), tf.BertForSequenceClassification
    if arch == "distilbert":
        return tf.DistilBertConfig(vocab_size=80, dim=24, n_layers=2, n_heads=4, hidden_dim=36, max_position_embeddings=MAX_POS,
                                   num_labels=len(LABELS), id2label=LABELS,
                                   label2id=common["label2id"]), tf.DistilBertForSequenceClassification
    if arch == "roberta":
        return tf.RobertaConfig(**common, pad_token_id=0, type_vocab_size=1), tf.RobertaForSequenceClassification
    if arch == "xlm-roberta":
        return tf.XLMRobertaConfig(**common, pad_token_id=0, type_vocab_size=1), tf.XLMRobertaForSequenceClassification
    if arch == "electra":
        return tf.ElectraConfig(**common, embedding_size=16), tf.ElectraForSequenceClassification
    if arch == "albert":
        return tf.AlbertConfig(**common, embedding_size=16), tf.AlbertForSequenceClassification
    if arch == "mpnet":
        return tf.MPNetConfig(**common, pad_token_id=0), tf.MPNetForSequenceClassification
    raise ValueError(arch)


ARCHS = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "albert", "mpnet")


TOKEN_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}


def build_classifier(arch: str, d: Path, seed: int = 0, labels: dict[int, str] | None = None,
                     head: str = "SequenceClassification"):
    """A tiny random ``arch`` with a sequence (or, with ``head="TokenClassification"``, token) classification head."""
    import torch

    torch.manual_seed(seed)
    d.mkdir(parents=True, exist_ok=True)
    config, cls = _config(arch, labels, head)
    return save_with_scaled_head(cls(config).eval(), d)


def save_with_scaled_head(model, d: Path) -> Path:
    """Save a random classifier and the tiny tokenizer in ``d``; the head is scaled first, since random init leaves
    logits near 0 and probabilities near uniform."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "classifier" in name:
                p.mul_(20.0)
    model.save_pretrained(d)
    _tokenizer(d)
    return d


def build_sentence_encoder(d: Path, seed: int = 0, normalize: bool = True, pooling: str = "mean"):
    """A sentence-transformers layout: encoder at the root, mean (or CLS) pooling, optional Normalize."""
    import numpy as np
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    d.mkdir(parents=True, exist_ok=True)
    cfg = tf.BertConfig(vocab_size=80, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=36,
                        max_position_embeddings=MAX_POS)
    tf.BertModel(cfg).eval().save_pretrained(d)
    _tokenizer(d)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (d / "modules.json").write_text(json.dumps(modules))
    (d / "1_Pooling").mkdir(exist_ok=True)
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 24,
                                                             "pooling_mode_mean_tokens": pooling == "mean",
                                                             "pooling_mode_cls_token": pooling == "cls"}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    rng = np.random.default_rng(seed)
    head = d.parent / f"{d.name}-head.npz"
    np.savez(head, W=rng.normal(size=(2, 24)).astype(np.float32) * 3, b=np.array([0.1, -0.1], np.float32),
             labels=np.array(["negative", "positive"]))
    return d, head
