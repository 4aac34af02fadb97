"""HTTP service (the optional ``serve`` extra: starlette + uvicorn). One onnxruntime session per graph serves every
request; parsing, validation and the work run in worker threads, never on the event loop.

    GET  /health          {"status": "ok"}
    GET  /v1/model        labels, methods available (and those unavailable, with why), limits, security settings
    POST /v1/predict      {"texts": [...]}                       -> {"results": [...]}
    POST /v1/explain      {"texts": [...], "method": "ig", ...}  -> {"method": ..., "results": [...]} (the CLI's schema)

Every answer is JSON and carries an ``X-Request-Id`` header; every error body is ``{"error": message}`` (a 500 also
gives ``request_id``, and the server logs its traceback under that id). Statuses: 400 malformed JSON (or nested too
deeply, an integer too long, NaN); 401 a missing or wrong bearer token; 403 a Host or Origin not allowed; 404/405;
409 a gradient method on a bundle without a gradient graph; 413 a body, a text or a list too long; 415 a POST that is
not ``Content-Type: application/json``; 422 a bad field, or work over the budget; 503 the queue full; 504 the time
limit. The limits are :class:`xai_onnx.limits.Limits`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import GradientUnavailableError, InputError, XaiOnnxError, install_hint
from .limits import Cancel, Cancelled, Limits, cancellable, check_work
from .model import Model
from .registry import all_options, get_method, make_explainer, method_table, parse_methods

STEP_FIELDS = ("steps", "max_steps")  # IG's fixed steps and adaptive IG's most evaluations: both capped by max_steps
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
API_KEY_ENV = "XAI_ONNX_API_KEY"


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# ---- parsing (worker threads) --------------------------------------------------------------------------------------
# a JSON string, or an unterminated one up to the end: every quote starts a match that ends in one pass, so the scan
# stays linear (stopping at a closing quote only made '"' + '\\"' * n quadratic: 8 s at n = 8000)
_STRING = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.S)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings, without parsing (a C-speed scan)."""
    arr = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    step = (arr == ord("[")).astype(np.int32) + (arr == ord("{")) - (arr == ord("]")) - (arr == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def parse_body(raw: bytes, limits: Limits) -> dict[str, Any]:
    """A request body -> a JSON object; HTTPProblem 400/422 for anything else. Nesting, integer length and
    non-finite numbers are refused before or while parsing, lone surrogates after."""
    if json_depth(raw) > limits.max_depth:
        raise HTTPProblem(400, f"JSON nested deeper than {limits.max_depth} levels")

    def parse_int(s: str) -> int:
        if len(s.lstrip("-")) > limits.max_int_digits:
            raise HTTPProblem(400, f"an integer of {len(s.lstrip('-'))} digits; the limit is {limits.max_int_digits}")
        return int(s)

    def parse_float(s: str) -> float:
        value = float(s)
        if not math.isfinite(value):
            raise HTTPProblem(400, f"a number out of range: {s[:40]}")
        return value

    def parse_constant(s: str) -> Any:
        raise HTTPProblem(400, f"{s} is not JSON")

    try:
        body = json.loads(raw, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # the depth scan makes this unreachable; kept as a guard
        raise HTTPProblem(400, "JSON nested too deeply") from exc
    if not isinstance(body, dict):
        raise HTTPProblem(422, "the body must be a JSON object")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode("ascii")
        raise HTTPProblem(422, f"a string holds a lone surrogate ({bad}): not valid Unicode") from exc
    return body


def _texts(body: dict[str, Any], limits: Limits) -> list[str]:
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise HTTPProblem(422, '"texts" must be a list of strings')
    if not texts:
        raise HTTPProblem(422, '"texts" is empty')
    if len(texts) > limits.max_texts:
        raise HTTPProblem(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    longest = max(len(t) for t in texts)
    if longest > limits.max_chars:
        raise HTTPProblem(413, f"a text of {longest} characters; the limit is {limits.max_chars}")
    return texts


REQUEST_FIELDS = ("texts", "text_pairs", "method", "target", "positions", "outside")


def _pairs(body: dict[str, Any], texts: list[str], limits: Limits) -> list[str] | None:
    pairs = body.get("text_pairs")
    if pairs is None:
        return None
    if not isinstance(pairs, list) or not all(isinstance(t, str) for t in pairs):
        raise HTTPProblem(422, '"text_pairs" must be a list of strings')
    if len(pairs) != len(texts):
        raise HTTPProblem(422, f'{len(texts)} texts and {len(pairs)} text_pairs: give one pair text per text')
    if pairs and max(len(t) for t in pairs) > limits.max_chars:
        raise HTTPProblem(413, f"a text pair of {max(len(t) for t in pairs)} characters; the limit is {limits.max_chars}")
    return pairs


def _task_options(model: Model, body: dict[str, Any]) -> dict[str, Any]:
    options = {k: body[k] for k in ("positions", "outside") if body.get(k) is not None}
    if options and model.manifest.task != "token-classification":
        raise HTTPProblem(422, f'"positions" and "outside" apply to token-classification bundles; this one is '
                               f"{model.manifest.task}")
    if "outside" in options and not isinstance(options["outside"], str):
        raise HTTPProblem(422, '"outside" must be a label name')
    return options


def _methods(body: dict[str, Any]) -> list[str]:
    """``"method"``: a name, several comma-separated (the CLI's form), or a list of names."""
    try:
        return parse_methods(body.get("method"))
    except InputError as exc:
        raise HTTPProblem(422, f'"method": {exc}') from exc  # the registry's message names the choices


def _options(body: dict[str, Any], methods: list[str], limits: Limits) -> dict[str, Any]:
    """The method options of a body, by their CLI names; each must be taken by one of ``methods``. The registry
    checks types and bounds; the step counts are held to ``limits.max_steps`` first (building IG's quadrature
    alone costs time and memory that grow with them)."""
    every = all_options()
    allowed = {key for key, (_, names) in every.items() if key != "batch_size" and set(names) & set(methods)}
    unknown = set(body) - allowed - set(REQUEST_FIELDS)
    if unknown:
        raise HTTPProblem(422, f"unknown field(s) {sorted(unknown)} for {', '.join(methods)}; allowed: "
                               f"{', '.join(REQUEST_FIELDS)}, {', '.join(sorted(allowed))}")
    out = {k: v for k, v in body.items() if k in allowed}
    for key in STEP_FIELDS:
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limits.max_steps:
            raise HTTPProblem(422, f'"{key}" must be at most {limits.max_steps} (this server\'s limit), got {value:g}')
    baseline = out.get("baseline")
    if isinstance(baseline, str) and len(baseline) > limits.max_chars:
        raise HTTPProblem(413, f"a baseline text of {len(baseline)} characters; the limit is {limits.max_chars}")
    return out


def prepare_explain(model: Model, body: dict[str, Any], limits: Limits) -> Callable[[], dict[str, Any]]:
    """Everything checked (fields, methods, options, the work budget) -> the work, as a function of no arguments."""
    texts = _texts(body, limits)
    methods = _methods(body)
    for method in methods:
        if get_method(method).needs_gradient and not model.has_gradient:
            raise HTTPProblem(409, f"method {method!r} needs the gradient graph, which this bundle lacks; "
                                   "use occlusion or fd, or re-export the bundle with `xai-onnx export`")
    options = _options(body, methods, limits)
    target = body.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise HTTPProblem(422, '"target" must be a label name, an index or "all"')
    model.task.check_target(target)
    pairs = _pairs(body, texts, limits)
    task_options = _task_options(model, body)
    explainers = [make_explainer(model, m, options) for m in methods]
    check_work(model, explainers, texts, target, limits.max_evaluations, override="`serve --max-evaluations`",
               text_pairs=pairs, task_options=task_options)
    given = body["method"] if isinstance(body["method"], str) else ",".join(methods)

    def work() -> dict[str, Any]:
        results = []
        for ex in explainers:
            results += [r.to_dict() for r in ex.explain(texts, target=target, text_pairs=pairs, **task_options)]
        return {"method": given, "results": results}

    return work


def explain_payload(model: Model, body: dict[str, Any], limits: Limits | None = None) -> dict[str, Any]:
    """The /v1/explain answer for a parsed body (also what the tests compare against the library)."""
    return prepare_explain(model, body, limits or Limits())()


# ---- the application -----------------------------------------------------------------------------------------------
def _hostname(value: str) -> str:
    """``host[:port]`` or ``[v6]:port`` -> the host, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Host header names accepted for a server bound to ``host``: the bound name (and the loopback names when it is
    a loopback address) plus ``extra``; None (any) for a wildcard address without ``extra``."""
    names = {_hostname(h) for h in extra}
    if host in ("0.0.0.0", "::", ""):
        return frozenset(names) if names else None
    names.add(_hostname(host) if not host.startswith("[") else host[1:-1])
    if is_loopback(host):
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


def create_app(model: Model, *, limits: Limits | None = None, api_key: str | None = None,
               hosts: frozenset[str] | None = None, quiet: bool = True,
               max_texts: int | None = None, max_chars: int | None = None) -> Any:
    """The ASGI application. hosts: Host names accepted (None, the default here: any; :func:`serve` passes the
    bound address's, see :func:`allowed_hosts`). api_key: bearer token every endpoint but /health requires.
    quiet: no request log on stderr."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect, Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError as exc:
        raise XaiOnnxError(f"the service needs the serve extra: {install_hint('serve')}") from exc
    limits = limits or Limits()
    if max_texts is not None or max_chars is not None:
        from dataclasses import replace

        limits = replace(limits, max_texts=max_texts or limits.max_texts, max_chars=max_chars or limits.max_chars)
    state: dict[str, Any] = {"waiting": 0, "slots": None}

    def slots() -> asyncio.Semaphore:
        if state["slots"] is None:
            state["slots"] = asyncio.Semaphore(limits.max_concurrency)
        return state["slots"]

    async def read_body(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPProblem(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
        cap = limits.body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit() or len(length.strip()) > 18:
                raise HTTPProblem(400, "a malformed Content-Length")
            if int(length) > cap:
                raise HTTPProblem(413, f"a body of {int(length)} bytes; the limit is {cap}", {"Connection": "close"})
        parts, total = [], 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > cap:
                    raise HTTPProblem(413, f"a body over {cap} bytes", {"Connection": "close"})
                parts.append(chunk)
        except ClientDisconnect as exc:
            raise HTTPProblem(400, "the client disconnected while sending the body") from exc
        return b"".join(parts)

    async def run_job(work: Callable[[], Any], deadline: float) -> bytes:
        """Run ``work`` in a worker thread once one of max_concurrency slots is free; 503 when max_queue requests
        wait already, 504 at the deadline (the running onnxruntime call is then terminated; the slot stays taken
        until the thread has stopped, so the CPU work is bounded too)."""
        sem = slots()
        if sem.locked() and state["waiting"] >= limits.max_queue:
            raise HTTPProblem(503, f"busy: {limits.max_concurrency} requests computing and {state['waiting']} waiting; "
                                   "retry later", {"Retry-After": "1"})
        state["waiting"] += 1
        try:
            await asyncio.wait_for(sem.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError as exc:
            raise HTTPProblem(504, f"timed out after {limits.timeout:g} s waiting for a worker") from exc
        finally:
            state["waiting"] -= 1
        token = Cancel()

        def job() -> bytes:
            with cancellable(token):
                payload = work()
            # rendered here, in the worker thread: 64 long texts' results are megabytes of JSON
            return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")

        task = asyncio.ensure_future(run_in_threadpool(job))

        def finished(t: asyncio.Future) -> None:
            sem.release()
            if not t.cancelled():
                t.exception()  # retrieved: a timed-out job's Cancelled is expected

        task.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError as exc:
            token.cancel()
            raise HTTPProblem(504, f"timed out after {limits.timeout:g} s; the work was cancelled") from exc

    async def in_time(awaitable: Any, deadline: float) -> Any:
        try:
            return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError as exc:
            raise HTTPProblem(504, f"timed out after {limits.timeout:g} s") from exc

    def check_client(request: Request) -> None:
        if hosts is not None:
            host = _hostname(request.headers.get("host", ""))
            if host not in hosts:
                raise HTTPProblem(403, f"Host {host!r} is not allowed (allowed: {', '.join(sorted(hosts))}; "
                                       "`xai-onnx serve --allow-host NAME` adds one)")
            origin = request.headers.get("origin")
            if origin is not None:
                from urllib.parse import urlsplit

                if (urlsplit(origin).hostname or "").lower() not in hosts:
                    raise HTTPProblem(403, f"Origin {origin[:80]!r} is not allowed")
        if api_key is not None and request.url.path != "/health":
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode("utf-8", "replace"), api_key.encode("utf-8")):
                raise HTTPProblem(401, "a valid `Authorization: Bearer <key>` header is required",
                                  {"WWW-Authenticate": "Bearer"})

    def log(request_id: str, request: Request, status: int, n_texts: int | None, started: float) -> None:
        if not quiet:
            texts = "-" if n_texts is None else str(n_texts)
            print(f"xai-onnx serve: {request.method} {request.url.path} {status} texts={texts} "
                  f"{1000 * (time.monotonic() - started):.1f}ms id={request_id}", file=sys.stderr, flush=True)

    def guard(handler: Callable[[Request, float, dict[str, Any]], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            started = time.monotonic()
            request_id = uuid.uuid4().hex[:16]
            info: dict[str, Any] = {}
            headers = {"X-Request-Id": request_id}
            try:
                check_client(request)
                payload = await handler(request, started + limits.timeout, info)
                response: Response = (Response(payload, media_type="application/json", headers=headers)
                                      if isinstance(payload, bytes) else JSONResponse(payload, headers=headers))
            except HTTPProblem as exc:
                response = JSONResponse({"error": str(exc)}, status_code=exc.status, headers={**headers, **exc.headers})
            except GradientUnavailableError as exc:
                response = JSONResponse({"error": str(exc)}, status_code=409, headers=headers)
            except Cancelled as exc:
                response = JSONResponse({"error": str(exc)}, status_code=504, headers=headers)
            except XaiOnnxError as exc:
                response = JSONResponse({"error": str(exc)}, status_code=422, headers=headers)
            except Exception:  # noqa: BLE001 - a bug: logged with its id, answered as JSON
                print(f"xai-onnx serve: internal error, request id {request_id}:\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)
                response = JSONResponse({"error": f"internal error (request id {request_id}); the server's log has "
                                                  "the details", "request_id": request_id}, status_code=500, headers=headers)
            log(request_id, request, response.status_code, info.get("n_texts"), started)
            return response
        return wrapped

    async def health(_request: Request, _deadline: float, _info: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok"}

    async def describe(_request: Request, _deadline: float, _info: dict[str, Any]) -> dict[str, Any]:
        m = model.manifest
        table = [t for t in method_table() if model.has_gradient or not t["needs_gradient"]]
        return {"task": m.task, "labels": list(m.labels), "methods": [t["name"] for t in table], "method_options": table,
                "unavailable": model.unavailable_methods(),
                "architecture": m.architecture, "max_length": m.max_length, "gradient": model.has_gradient,
                "limits": limits.to_dict(),
                "security": {"api_key": api_key is not None, "allowed_hosts": None if hosts is None else sorted(hosts)}}

    def parsed(raw: bytes, info: dict[str, Any]) -> dict[str, Any]:
        body = parse_body(raw, limits)
        if isinstance(body.get("texts"), list):
            info["n_texts"] = len(body["texts"])
        return body

    async def predict(request: Request, deadline: float, info: dict[str, Any]) -> bytes:
        raw = await in_time(read_body(request), deadline)

        def prepare() -> Callable[[], dict[str, Any]]:
            body = parsed(raw, info)
            unknown = set(body) - {"texts", "text_pairs"}
            if unknown:
                raise HTTPProblem(422, f"unknown field(s) {sorted(unknown)}; /v1/predict takes texts and text_pairs")
            texts = _texts(body, limits)
            pairs = _pairs(body, texts, limits)
            return lambda: {"results": [p.to_dict() for p in model.predict(texts, pairs)]}

        work = await in_time(run_in_threadpool(prepare), deadline)
        return await run_job(work, deadline)

    async def explain(request: Request, deadline: float, info: dict[str, Any]) -> bytes:
        raw = await in_time(read_body(request), deadline)
        work = await in_time(run_in_threadpool(lambda: prepare_explain(model, parsed(raw, info), limits)), deadline)
        return await run_job(work, deadline)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return JSONResponse({"error": f"{request.method} {request.url.path}: "
                                      f"{exc.detail if isinstance(exc, HTTPException) else 'internal error'}"},
                            status_code=status)

    return Starlette(routes=[
        Route("/health", guard(health), methods=["GET"]),
        Route("/v1/model", guard(describe), methods=["GET"]),
        Route("/v1/predict", guard(predict), methods=["POST"]),
        Route("/v1/explain", guard(explain), methods=["POST"]),
    ], exception_handlers={HTTPException: http_error})


def protocol_class(limits: Limits) -> type:
    """uvicorn's h11 protocol with what it lacks: at most ``max_connections`` open connections (more are closed at
    once), and ``header_timeout`` seconds for a client to send a whole request (headers and body) once the connection
    opens or a new request starts (uvicorn has only a keep-alive timeout between requests)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            over = len(self.connections) >= limits.max_connections
            super().connection_made(transport)  # type: ignore[arg-type]
            if over:
                self.transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(limits.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            self._timer = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._timer is None and self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm()

        def on_response_complete(self) -> None:
            self._disarm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Protocol


def security_warnings(host: str, api_key: str | None, hosts: frozenset[str] | None) -> list[str]:
    """What ``serve`` warns about at start: a non-loopback address without an API key, any Host accepted."""
    out = []
    if not is_loopback(host) and api_key is None:
        out.append(f"listening on {host}, reachable from other machines, without an API key: anyone who can connect "
                   f"can use it (set --api-key or ${API_KEY_ENV})")
    if hosts is None:
        out.append("any Host header is accepted (a wildcard address without --allow-host): browsers on this network "
                   "are open to DNS rebinding")
    return out


def serve(model: Model, host: str = "127.0.0.1", port: int = 8000, *, limits: Limits | None = None,
          api_key: str | None = None, allow_hosts: Iterable[str] = (), quiet: bool = False,
          max_texts: int | None = None, max_chars: int | None = None) -> None:
    """Serve ``model`` with uvicorn until interrupted (``xai-onnx serve``)."""
    hosts = allowed_hosts(host, allow_hosts)
    app = create_app(model, limits=limits, api_key=api_key, hosts=hosts, quiet=quiet, max_texts=max_texts,
                     max_chars=max_chars)
    limits = limits or Limits()
    for line in security_warnings(host, api_key, hosts):
        print(f"xai-onnx serve: WARNING: {line}", file=sys.stderr)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, http=protocol_class(limits),
                limit_concurrency=limits.max_connections + 1, timeout_keep_alive=int(math.ceil(limits.keep_alive)),
                h11_max_incomplete_event_size=16 * 1024, backlog=128)
