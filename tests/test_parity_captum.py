"""Parity with Captum on the real fine-tuned model in ../shared (max |diff| <= 1e-4 x max |score|)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Captum parity needs torch (test dependency)")
captum_attr = pytest.importorskip("captum.attr", reason="Captum parity needs captum (test dependency)")

from conftest import SST2_MODEL, need_shared, sst2_sentences  # noqa: E402

from xai_onnx import IntegratedGradients, Model, Occlusion, Saliency  # noqa: E402

pytestmark = pytest.mark.slow  # exports minilm-sst2 and runs Captum on it

N_SENTENCES = 6


@pytest.fixture(scope="module")
def reference():
    need_shared()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SST2_MODEL)
    hf = AutoModelForSequenceClassification.from_pretrained(SST2_MODEL, attn_implementation="eager").eval()
    return tok, hf


@pytest.fixture(scope="module")
def ours(sst2_bundle):
    return Model(sst2_bundle, threads=2)


def _inputs(tok, text):
    enc = tok(text, return_tensors="pt", truncation=True, max_length=512)
    ids = enc["input_ids"]
    base = ids.clone()
    base[0, 1:-1] = tok.pad_token_id  # special tokens kept, the rest padded
    return ids, base, enc["attention_mask"], enc["token_type_ids"]


def _close(ours_scores, ref):
    ref = np.asarray(ref, dtype=np.float64)
    assert ours_scores.shape == ref.shape
    err = np.abs(ours_scores - ref).max() / np.abs(ref).max()
    assert err <= 1e-4, err
    return err


@pytest.mark.parametrize("output", ["prob", "logit"])
@pytest.mark.parametrize("integration", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients(reference, ours, output, integration):
    tok, hf = reference

    def f(ids, mask, tt):
        logits = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits
        return torch.softmax(logits, -1) if output == "prob" else logits

    lig = captum_attr.LayerIntegratedGradients(f, hf.bert.embeddings.word_embeddings)
    texts = [t for _, t in sst2_sentences("dev", N_SENTENCES)]
    results = IntegratedGradients(ours, n_steps=50, method=integration, output=output).explain(texts)
    for text, r in zip(texts, results):
        ids, base, mask, tt = _inputs(tok, text)
        attr, delta = lig.attribute(ids, baselines=base, additional_forward_args=(mask, tt), target=r.target.index,
                                    n_steps=50, method=integration, return_convergence_delta=True)
        _close(r.scores, attr.sum(-1)[0].detach().numpy())
        assert abs(r.convergence_delta - float(delta)) <= 1e-4 * np.abs(r.scores).max() + 1e-6


def _embeds_forward(hf):
    def f(embeds, mask, tt):
        return torch.softmax(hf(inputs_embeds=embeds, attention_mask=mask, token_type_ids=tt).logits, -1)

    return f


def test_saliency(reference, ours):
    tok, hf = reference
    sal = captum_attr.Saliency(_embeds_forward(hf))
    texts = [t for _, t in sst2_sentences("dev", N_SENTENCES)]
    for text, r in zip(texts, Saliency(ours).explain(texts)):
        ids, _, mask, tt = _inputs(tok, text)
        embeds = hf.bert.embeddings.word_embeddings(ids).detach()
        g = sal.attribute(embeds, target=r.target.index, abs=False, additional_forward_args=(mask, tt))
        _close(r.scores, g[0].norm(dim=-1).numpy())


@pytest.mark.parametrize("window", [1, 3])
def test_occlusion(reference, ours, window):
    tok, hf = reference
    occ = captum_attr.Occlusion(_embeds_forward(hf))
    texts = [t for _, t in sst2_sentences("dev", N_SENTENCES)]
    for text, r in zip(texts, Occlusion(ours, window=window).explain(texts)):
        ids, base, mask, tt = _inputs(tok, text)
        emb = hf.bert.embeddings.word_embeddings
        embeds, base_embeds = emb(ids).detach(), emb(base).detach()
        hidden = embeds.shape[-1]
        attr = occ.attribute(embeds, sliding_window_shapes=(window, hidden), strides=(1, hidden), baselines=base_embeds,
                             target=r.target.index, additional_forward_args=(mask, tt))
        _close(r.scores, attr[0, :, 0].detach().numpy())
