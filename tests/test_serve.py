"""The HTTP service, started for real on loopback: every endpoint, each bad request, and 200 concurrent explains."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("starlette", reason="the service needs the serve extra")
pytest.importorskip("uvicorn", reason="the service needs the serve extra")

from xai_onnx import IntegratedGradients, Model, Occlusion  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xai_onnx.cli", "serve", str(bundle), "--port", str(port),
                             "--max-texts", "8", "--max-chars", "200", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError as exc:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()) from exc
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 60 s")


def call(url: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(handmade):
    proc, url = start(handmade[0])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_endpoints(server, handmade):
    assert call(server, "/health") == (200, {"status": "ok"})
    status, info = call(server, "/v1/model")
    assert status == 200 and info["labels"] == ["negative", "neutral", "positive"]
    assert set(info["methods"]) == {"ig", "saliency", "grad_x_input", "occlusion", "fd", "lime", "kernel_shap",
                                    "partition_shap"}
    status, pred = call(server, "/v1/predict", {"texts": ["good movie"]})
    assert status == 200 and pred["results"][0]["label"] == Model(handmade[0]).predict(["good movie"])[0].label
    status, out = call(server, "/v1/explain", {"texts": ["good movie", "not fun"], "method": "occlusion", "window": 2,
                                               "target": "positive"})
    assert status == 200 and out["method"] == "occlusion"
    lib = Occlusion(Model(handmade[0]), window=2).explain(["good movie", "not fun"], target="positive")
    assert out["results"] == [r.to_dict() for r in lib]


@pytest.mark.parametrize("body,raw,status", [
    (None, b"{not json", 400),
    ([1, 2], None, 422),
    ({"texts": "good"}, None, 422),
    ({"texts": []}, None, 422),
    ({"texts": ["x"] * 9, "method": "ig"}, None, 413),
    ({"texts": ["x" * 201], "method": "ig"}, None, 413),
    ({"texts": ["x"], "method": "shapley_magic"}, None, 422),
    ({"texts": ["x"], "method": "ig", "steps": "many"}, None, 422),
    ({"texts": ["x"], "method": "ig", "target": "happy"}, None, 422),
    ({"texts": ["x"], "method": "ig", "colour": "red"}, None, 422),
])
def test_bad_requests(server, body, raw, status):
    got, payload = call(server, "/v1/explain", body, raw)
    assert got == status and payload["error"]


def test_method_the_bundle_cannot_serve(handmade_forward_only):
    proc, url = start(handmade_forward_only)
    try:
        status, payload = call(url, "/v1/explain", {"texts": ["good"], "method": "saliency"})
        assert status == 409 and "gradient" in payload["error"]
        assert call(url, "/v1/explain", {"texts": ["good"], "method": "fd"})[0] == 200
        assert "saliency" not in call(url, "/v1/model")[1]["methods"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_200_concurrent_explains(server, handmade):
    texts = ["good movie", "the movie very dull a", "not fun", "a very good fun movie"]
    lib = {t: IntegratedGradients(Model(handmade[0]), n_steps=16).explain([t])[0].to_dict() for t in texts}
    bodies = [{"texts": [texts[i % 4]], "method": "ig", "steps": 16} for i in range(200)]
    start_t = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda b: call(server, "/v1/explain", b), bodies, timeout=240))
    assert time.monotonic() - start_t < 240
    for body, (status, out) in zip(bodies, answers):
        assert status == 200
        got = out["results"][0]
        want = lib[body["texts"][0]]
        assert got["tokens"] == want["tokens"] and got["target"] == want["target"]
        assert max(abs(a - b) for a, b in zip(got["scores"], want["scores"])) <= 1e-9
