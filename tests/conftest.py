from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XAI_ONNX_SHARED", ROOT.parent / "shared"))
SST2_MODEL = SHARED / "models" / "minilm-sst2"
SST2_DATA = SHARED / "data" / "sst2"


@pytest.fixture
def onnx_calls(monkeypatch):
    """The rows of each onnxruntime call ``Model`` makes while the test runs (a list, in call order)."""
    from xai_onnx.model import Model

    calls: list[int] = []
    real = Model._session_run

    def counting(session, names, feeds, cancel):
        calls.append(len(next(iter(feeds.values()))))
        return real(session, names, feeds, cancel)

    monkeypatch.setattr(Model, "_session_run", staticmethod(counting))
    return calls


def need_shared() -> None:
    if not (SST2_MODEL / "model.safetensors").is_file():
        pytest.skip(f"../shared is absent ({SST2_MODEL} not found): the real-model tests need it")


@pytest.fixture(scope="session")
def handmade(tmp_path_factory):
    from handmade import build

    d = tmp_path_factory.mktemp("handmade")
    params = build(d)
    return d, params


@pytest.fixture(scope="session")
def handmade_without_top(tmp_path_factory):
    """The same model, its gradient graph without ``w_top``, like bundles exported before it existed."""
    from handmade import build

    d = tmp_path_factory.mktemp("handmade_no_top")
    build(d, top=False)
    return d


@pytest.fixture(scope="session")
def handmade_forward_only(tmp_path_factory):
    from handmade import build

    d = tmp_path_factory.mktemp("handmade_fwd")
    build(d, gradient=False)
    return d


@pytest.fixture(scope="session")
def sst2_bundle(tmp_path_factory):
    """minilm-sst2 exported once per session (about a minute on 2 cores), with the opt-in int8 gradient graph."""
    need_shared()
    pytest.importorskip("torch")
    from xai_onnx_exporters import export_bundle

    out = tmp_path_factory.mktemp("sst2") / "bundle"
    export_bundle(SST2_MODEL, out, int8=True)
    return out


def sst2_sentences(split: str, n: int) -> list[tuple[int, str]]:
    rows = []
    with open(SST2_DATA / f"stsa.binary.{split}", encoding="utf-8") as f:
        for line in f:
            label, text = line.rstrip("\n").split(" ", 1)
            rows.append((int(label), text))
            if len(rows) == n:
                break
    return rows


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``get(arch, kind)`` -> (source dir, bundle dir): a tiny random model built and exported once per test session.

    kind: "seq" (3-label sequence classifier), "token" (token classifier, TOKEN_LABELS), "cross" (BERT with one
    output: a cross-encoder), "similarity" (a sentence-transformers encoder without a head)."""
    pytest.importorskip("torch")
    from tiny_models import TOKEN_LABELS, build_classifier, build_sentence_encoder
    from xai_onnx_exporters import export_bundle

    cache: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(arch: str, kind: str = "seq") -> tuple[Path, Path]:
        if (arch, kind) not in cache:
            root = tmp_path_factory.mktemp(f"{arch}-{kind}")
            if kind == "seq":
                src = build_classifier(arch, root / "model")
            elif kind == "token":
                src = build_classifier(arch, root / "model", labels=TOKEN_LABELS, head="TokenClassification")
            elif kind == "cross":
                src = build_classifier(arch, root / "model", labels={0: "score"})
            elif kind == "similarity":
                src, _ = build_sentence_encoder(root / "model", normalize=True, pooling="mean")
            else:
                raise ValueError(kind)
            export_bundle(src, root / "bundle")
            cache[arch, kind] = (src, root / "bundle")
        return cache[arch, kind]

    return get
