"""Hostile input against the real service on loopback: oversized work, bodies and nesting, malformed values,
browser-borne requests, idle and half-sent connections, time limits; plus the model-side guards (one gradient
session under concurrency, rows per call bounded by memory, cancellation). Every client call has a timeout and
every loop a bound."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the service needs the serve extra")
pytest.importorskip("uvicorn", reason="the service needs the serve extra")

from xai_onnx import Model  # noqa: E402
from xai_onnx.limits import Cancel, Cancelled, Limits, row_bytes  # noqa: E402
from xai_onnx.model import RowGroup, plan_batches  # noqa: E402
from xai_onnx.serve import allowed_hosts, json_depth, security_warnings  # noqa: E402

CLIENT_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port
        self.stderr = ""

    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None,
                timeout: float = CLIENT_TIMEOUT) -> tuple[int, dict, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            return r.status, json.loads(payload), r.headers  # type: ignore[return-value] # case-insensitive
        finally:
            conn.close()

    def post(self, path: str, body=None, **kw) -> tuple[int, dict]:
        status, payload, _ = self.request("POST", path, body, **kw)
        return status, payload


@contextmanager
def running(bundle, *options: str, env: dict | None = None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xai_onnx.cli", "serve", str(bundle), "--port", str(port),
                             "--threads", "1", *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    server = Server(proc, port)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {proc.stderr.read().decode() if proc.stderr else ''}") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=30)
        server.stderr = err.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def server(handmade):
    with running(handmade[0], "--max-texts", "8", "--max-chars", "200", "--header-timeout", "2") as s:
        yield s


def health_ok(server: Server) -> bool:
    return server.request("GET", "/health", timeout=10)[0] == 200


# ---- 1. work budget --------------------------------------------------------------------------------------------------
def test_huge_step_counts_are_refused_before_any_work(server):
    for steps in (100_000_000, 10**9, 1025):
        started = time.monotonic()
        status, payload = server.post("/v1/explain", {"texts": ["good movie"], "method": "ig", "steps": steps})
        assert status == 422 and "steps" in payload["error"] and "1024" in payload["error"]
        assert time.monotonic() - started < CLIENT_TIMEOUT
    status, payload = server.post("/v1/explain", {"texts": ["good"], "method": "ig", "adaptive": True, "max_steps": 4000})
    assert status == 422 and "max_steps" in payload["error"]
    status, payload = server.post("/v1/explain", {"texts": ["good"], "method": "occlusion", "steps": 8})
    assert status == 422 and "steps" in payload["error"]  # an option none of the methods asked for takes
    assert health_ok(server)


def test_work_over_the_evaluation_budget_names_the_option(handmade):
    with running(handmade[0], "--max-evaluations", "40") as s:
        status, payload = s.post("/v1/explain", {"texts": ["good movie"], "method": "ig", "steps": 50})
        assert status == 422 and "50 evaluations" in payload["error"] and "lower steps" in payload["error"]
        # target "all" multiplies by the labels (3): 15 steps fit, 3 x 15 do not
        assert s.post("/v1/explain", {"texts": ["good movie"], "method": "ig", "steps": 15})[0] == 200
        status, payload = s.post("/v1/explain", {"texts": ["good movie"], "method": "ig", "steps": 15, "target": "all"})
        assert status == 422 and "45 evaluations" in payload["error"]
        status, info, _ = s.request("GET", "/v1/model")
        assert info["limits"]["max_evaluations"] == 40 and info["limits"]["max_steps"] == Limits().max_steps


def test_time_limit_answers_504_and_frees_the_worker(handmade):
    texts = ["good movie very fun a the not dull bad"] * 64
    # 196,608 gradient rows, 1 per call (a Riemann rule: Gauss-Legendre's nodes at 1024 steps take seconds to build);
    # far more than the 2 s limit on any machine
    heavy = {"texts": texts, "method": "ig", "steps": 1024, "target": "all", "integration": "riemann_middle"}
    with running(handmade[0], "--timeout", "2", "--max-concurrency", "1", "--batch-size", "1", "--max-evaluations", "4096") as s:
        status, payload, headers = s.request("POST", "/v1/explain", heavy)
        assert status == 504 and "the work was cancelled" in payload["error"] and headers.get("X-Request-Id")
        # the cancelled work stops at its next onnxruntime call and gives the only worker back: without
        # cancellation it would hold it for the whole computation and every request below would wait and time out
        answers = []
        for _ in range(5):
            answers.append(s.post("/v1/explain", {"texts": ["good"], "method": "saliency"})[0])
            if answers[-1] == 200:
                break
            time.sleep(0.5)
        assert answers[-1] == 200, answers


def test_full_queue_answers_503(handmade):
    # 64 texts x 3 labels x 1024 steps = 196,608 gradient rows, 1 per call: far more than 3 s on any machine (8 texts
    # finished inside the limit on a quiet one)
    texts = ["good movie very fun a the not dull bad"] * 64
    heavy = {"texts": texts, "method": "ig", "steps": 1024, "target": "all", "integration": "riemann_middle"}
    with running(handmade[0], "--timeout", "3", "--max-concurrency", "1", "--max-queue", "0", "--batch-size", "1",
                 "--max-evaluations", "4096") as s:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(s.post, "/v1/explain", heavy)
            seen = []
            for _ in range(40):  # until the heavy request holds the only worker and the small one is turned away
                seen.append(s.request("POST", "/v1/predict", {"texts": ["good"]}))
                if seen[-1][0] == 503 or first.done():
                    break
                time.sleep(0.05)
            status, payload, headers = seen[-1]
            assert status == 503, [x[0] for x in seen]
            assert "busy" in payload["error"] and headers["Retry-After"] == "1"
            assert first.result(timeout=60)[0] == 504


def test_cli_explain_has_the_same_budget(handmade, capsys):
    from xai_onnx.cli import main

    bundle = str(handmade[0])
    for flag in ("--steps", "--max-steps"):  # the registry's bound, checked by argparse before any work
        with pytest.raises(SystemExit) as exc:
            main(["explain", bundle, "--text", "good movie", "--method", "ig", flag, "2000"])
        assert exc.value.code == 2 and "<= 1024" in capsys.readouterr().err
    assert main(["explain", bundle, "--text", "good", "--method", "ig", "--adaptive", "--max-steps", "1024",
                 "--max-evaluations", "1000"]) == 2
    assert "needs 1024 evaluations" in capsys.readouterr().err
    assert main(["explain", bundle, "--text", "good movie", "--method", "ig", "--max-evaluations", "40"]) == 2
    err = capsys.readouterr().err
    assert "needs 50 evaluations" in err and "lower steps" in err and "--max-evaluations" in err
    assert main(["explain", bundle, "--text", "good movie", "--method", "ig", "--max-evaluations", "50"]) == 0


def test_rows_per_call_follow_the_memory_budget(handmade, onnx_calls):
    model = Model(handmade[0], batch_size=64, memory_budget=2 * row_bytes(16, 4, 1, True))
    assert model.layers == 1 and model.rows_per_call(16, True) == 2 and model.rows_per_call(2, True) > 2
    long = RowGroup(np.zeros((7, 16, 4), np.float32), np.zeros(16, np.int64))
    out = model.run([long], gradient=True)
    assert out[0]["grad"].shape == (7, 16, 4)
    assert sorted(onnx_calls) == [1, 2, 2, 2]


def test_cpu_calls_hold_a_cache_sized_number_of_tokens(handmade, monkeypatch, onnx_calls):
    """On the CPU a float32 call holds at most CPU_CALL_ELEMENTS (tokens x dim) whatever the memory budget allows; the
    float32 results do not depend on how rows are cut into calls."""
    import xai_onnx.model as xm

    model = Model(handmade[0], batch_size=64)
    assert model._on_cpu
    group = RowGroup(np.random.default_rng(0).normal(size=(7, 16, 4)).astype(np.float32), np.zeros(16, np.int64))
    whole = model.run([group], gradient=True)[0]
    monkeypatch.setitem(xm.CPU_CALL_ELEMENTS, True, 3 * 16 * 4)
    monkeypatch.setitem(xm.CPU_CALL_ELEMENTS, False, 5 * 16 * 4)
    assert model.rows_per_call(16, True) == 3 and model.rows_per_call(16, False) == 5
    assert model.rows_per_call(1000, True) == 1  # never below one row
    calls = onnx_calls
    calls.clear()
    cut = model.run([group], gradient=True)[0]
    assert len(calls) == 3 and max(calls) == 3 and sum(calls) == 7
    np.testing.assert_allclose(cut["grad"], whole["grad"], rtol=1e-6, atol=1e-7)
    calls.clear()
    forward = model.run([group])[0]
    assert len(calls) == 2 and max(calls) == 5 and sum(calls) == 7
    np.testing.assert_allclose(forward["logits"], whole["logits"], rtol=1e-6, atol=1e-7)
    model._on_cpu = False  # another execution provider: only the memory budget and batch_size cut
    calls.clear()
    model.run([group], gradient=True)
    assert calls == [7]


def test_plan_batches_caps_rows_by_length():
    lengths = [2, 2, 2, 2, 10, 10, 10]
    plan = plan_batches(lengths, 64, rows_at=lambda n: 100 if n < 5 else 1)
    assert all(b - a == 1 for a, b in plan if lengths[b - 1] == 10)
    assert plan_batches(lengths, 64) == plan_batches(lengths, 64, rows_at=lambda n: 64)


def test_row_estimate_grows_with_length_and_depth():
    # minilm-sst2 (6 layers, dim 384): IG on a 512-token text in one 50-row call peaked at 12.3 GB, ~240 MB a row
    per_row = row_bytes(512, 384, 6, True)
    assert 150 * 2**20 < per_row < 512 * 2**20
    assert row_bytes(512, 384, 6, False) < per_row / 2 and row_bytes(64, 384, 6, True) < per_row / 8


def test_cancel_stops_model_run(handmade):
    model = Model(handmade[0])
    token = Cancel()
    token.cancel()
    with pytest.raises(Cancelled):
        model.run([RowGroup(np.zeros((1, 4, 4), np.float32), np.zeros(4, np.int64))], cancel=token)


# ---- 2. cold start -------------------------------------------------------------------------------------------------
def test_gradient_session_is_built_once_under_concurrency(handmade, monkeypatch):
    import xai_onnx.model as model_module

    model = Model(handmade[0])
    built = []
    real = model_module.create_session

    def slow_create(*args, **kwargs):
        built.append(1)
        time.sleep(0.2)  # widens the window in which other threads find no session yet
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "create_session", slow_create)
    with ThreadPoolExecutor(max_workers=16) as pool:
        sessions = list(pool.map(lambda _: model._gradient_session()[0], range(16), timeout=60))
    assert len(built) == 1 and all(s is sessions[0] for s in sessions)


# ---- 3. bodies -----------------------------------------------------------------------------------------------------
def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunks[-1]:
                break
        return b"".join(chunks)


def test_oversized_content_length_is_refused_before_reading(server):
    head = (b"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n{\"texts\": [")
    reply = raw_exchange(server.port, head)  # the 200 MB never come: a server that waits for them never answers
    assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply


def test_chunked_body_is_counted_while_streaming(server):
    limit = Limits(max_texts=8, max_chars=200).body_bytes
    chunk = b"x" * 65536
    parts = [b"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n"]
    for _ in range(limit // len(chunk) + 2):
        parts.append(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    reply = raw_exchange(server.port, b"".join(parts))
    assert reply.startswith(b"HTTP/1.1 413")


def test_baseline_text_is_held_to_max_chars(server):
    status, payload = server.post("/v1/explain", {"texts": ["good"], "method": "occlusion", "baseline": "a " * 150})
    assert status == 413 and "baseline" in payload["error"]


# ---- 4. bad requests: every one a JSON 4xx -------------------------------------------------------------------------
DEEP = b'{"texts": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"


@pytest.mark.parametrize("path,raw,status", [
    ("/v1/explain", b'{"texts": ["ok"], "method": ["ig"], "steps": 2}', 200),
    ("/v1/explain", b'{"texts": ["ok"], "method": {}}', 422),
    ("/v1/explain", b'{"texts": ["\\udcff"], "method": "ig"}', 422),
    ("/v1/predict", b'{"texts": ["\\udcff"]}', 422),
    ("/v1/explain", DEEP, 400),
    ("/v1/explain", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 413),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "steps": ' + b"9" * 5000 + b"}", 400),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "steps": 1e30}', 422),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "steps": 1e999}', 400),
    ("/v1/explain", b'{"texts": ["ok"], "method": "fd", "epsilon": NaN}', 400),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "target": 99999999999}', 422),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "target": true}', 422),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "tolerance": -1, "adaptive": true}', 422),
    ("/v1/explain", b'{"texts": ["ok"], "method": "ig", "baseline": 3}', 422),
    ("/v1/explain", b'{"texts": ["ok"], "method": ""}', 422),
    ("/v1/explain", b"\xff\xfe{}", 400),
    ("/v1/explain", b'{"texts": ["' + b'\\"' * 30_000, 400),  # unterminated: quadratic for a naive string scan
    ("/v1/explain", b"", 400),
    ("/v1/predict", b'{"texts": ["ok"], "method": "ig"}', 422),
    ("/v1/predict", b'"texts"', 422),
])
def test_bad_values_answer_json_4xx(server, path, raw, status):
    got, payload = server.post(path, raw=raw)
    assert got == status, payload
    assert status == 200 or payload["error"]


def test_unknown_paths_and_methods_answer_json(server):
    status, payload, _ = server.request("GET", "/nope")
    assert status == 404 and payload["error"]
    status, payload, _ = server.request("GET", "/v1/explain")
    assert status == 405 and payload["error"]


def test_a_bug_answers_500_with_a_request_id_that_the_log_has(handmade, capsys):
    import uvicorn

    from xai_onnx.serve import create_app

    model = Model(handmade[0])

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    model.predict = broken  # type: ignore[method-assign]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(model, quiet=True), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if srv.started:
                break
            time.sleep(0.1)
        status, payload, headers = Server(None, port).request("POST", "/v1/predict", {"texts": ["good"]})  # type: ignore[arg-type]
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
    assert status == 500 and payload["request_id"] == headers["X-Request-Id"]
    err = capsys.readouterr().err
    assert payload["request_id"] in err and "RuntimeError: a bug" in err


def test_json_depth_scan_ignores_brackets_in_strings():
    assert json_depth(b'{"a": ["[[[[", {"b": "{{"}]}') == 3
    assert json_depth(b'{"a": "\\"[[["}') == 1


# ---- 5. browser-borne requests ---------------------------------------------------------------------------------------
def test_foreign_host_and_origin_are_refused(server):
    status, payload, _ = server.request("POST", "/v1/predict", {"texts": ["good"]}, headers={"Host": "evil.example:80"})
    assert status == 403 and "Host" in payload["error"]
    status, payload, _ = server.request("POST", "/v1/predict", {"texts": ["good"]},
                                        headers={"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in payload["error"]
    assert server.request("POST", "/v1/predict", {"texts": ["good"]}, headers={"Host": "localhost:1"})[0] == 200


def test_cross_site_text_plain_post_is_refused(server):
    status, payload = server.post("/v1/explain", raw=b'{"texts": ["good"], "method": "ig"}',
                                  headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in payload["error"]


def test_allow_host_and_api_key(handmade):
    with running(handmade[0], "--allow-host", "xai.internal", env={"XAI_ONNX_API_KEY": "s3cret"}) as s:
        body = {"texts": ["good"]}
        assert s.request("POST", "/v1/predict", body)[0] == 401
        assert s.request("POST", "/v1/predict", body, headers={"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert s.request("POST", "/v1/predict", body, headers=auth)[0] == 200
        assert s.request("POST", "/v1/predict", body, headers={**auth, "Host": "xai.internal:8000"})[0] == 200
        assert s.request("POST", "/v1/predict", body, headers={**auth, "Host": "other.internal"})[0] == 403
        assert s.request("GET", "/health")[0] == 200  # probes need no key
        status, info, _ = s.request("GET", "/v1/model", headers=auth)
        assert info["security"]["api_key"] is True and "xai.internal" in info["security"]["allowed_hosts"]


def test_security_warnings():
    assert security_warnings("127.0.0.1", None, allowed_hosts("127.0.0.1")) == []
    assert any("API key" in w for w in security_warnings("0.0.0.0", None, allowed_hosts("0.0.0.0")))
    assert any("Host" in w for w in security_warnings("0.0.0.0", "k", allowed_hosts("0.0.0.0")))
    assert security_warnings("10.0.0.5", "k", allowed_hosts("10.0.0.5")) == []
    assert allowed_hosts("0.0.0.0", ["a.example"]) == frozenset({"a.example"})


# ---- 6. connections ------------------------------------------------------------------------------------------------
def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_request_is_closed_after_the_header_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        assert closed_within(sock, 15)  # --header-timeout 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"texts\"")  # a body that stops
        data = b""
        sock.settimeout(15)
        try:
            while len(data) < 1_000_000:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pytest.fail("a half-sent body kept the connection open")
        except ConnectionResetError:
            pass
    assert health_ok(server)


def test_connections_over_the_limit_are_closed(handmade):
    with running(handmade[0], "--max-connections", "4", "--header-timeout", "30") as s:
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(10)]
        try:
            closed = [closed_within(sock, 0.5) for sock in socks]
            assert sum(closed) >= 6 and not all(closed)
        finally:
            for sock in socks:
                sock.close()
        for _ in range(20):  # the closed ones are gone: the server answers again
            try:
                if health_ok(s):
                    break
            except OSError:
                time.sleep(0.2)
        assert health_ok(s)
        info = s.request("GET", "/v1/model")[1]["limits"]
        assert info["max_connections"] == 4 and info["header_timeout"] == 30 and info["keep_alive"] > 0


# ---- 7. request log ------------------------------------------------------------------------------------------------
def test_request_log_and_quiet(handmade):
    with running(handmade[0]) as s:
        assert s.post("/v1/explain", {"texts": ["good", "bad"], "method": "saliency"})[0] == 200
        assert s.post("/v1/explain", {"texts": ["good"], "method": "nope"})[0] == 422
    lines = [ln for ln in s.stderr.splitlines() if "POST /v1/explain" in ln]
    assert len(lines) == 2 and " 200 texts=2 " in lines[0] and " 422 texts=1 " in lines[1]
    assert lines[0].rstrip().split()[-2].endswith("ms")
    with running(handmade[0], "--quiet") as s:
        assert s.post("/v1/explain", {"texts": ["good"], "method": "saliency"})[0] == 200
    assert "POST /v1/explain" not in s.stderr


# ---- issue 13 item 6: several methods -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ig,occlusion", ["ig", "occlusion"]])
def test_several_methods_like_the_cli(server, handmade, method):
    from xai_onnx import IntegratedGradients, Occlusion

    status, out = server.post("/v1/explain", {"texts": ["good movie", "not fun"], "method": method, "steps": 8})
    assert status == 200, out
    assert out["method"] == (method if isinstance(method, str) else "ig,occlusion")
    assert [r["method"] for r in out["results"]] == ["ig", "ig", "occlusion", "occlusion"]
    model = Model(handmade[0])
    want = ([r.to_dict() for r in IntegratedGradients(model, n_steps=8).explain(["good movie", "not fun"])]
            + [r.to_dict() for r in Occlusion(model).explain(["good movie", "not fun"])])
    for got, exp in zip(out["results"], want):
        assert got["tokens"] == exp["tokens"]
        assert max(abs(a - b) for a, b in zip(got["scores"], exp["scores"])) <= 1e-9
