"""HTTP service (the optional ``serve`` extra: starlette + uvicorn). One onnxruntime session serves every request;
the work runs in worker threads, off the event loop.

    GET  /health          {"status": "ok"}
    GET  /v1/model        labels, methods available, limits
    POST /v1/predict      {"texts": [...]}                       -> {"results": [...]}
    POST /v1/explain      {"texts": [...], "method": "ig", ...}  -> {"method": ..., "results": [...]} (the CLI's schema)

Errors: 400 malformed JSON; 413 too many texts or a text too long; 422 a bad field; 409 a method this bundle cannot
serve (no gradient graph). Every error body is {"error": message}.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import GradientUnavailableError, InputError, XaiOnnxError
from .model import Model
from .registry import all_options, get_method, make_explainer, method_names, method_table


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _texts(body: dict[str, Any], max_texts: int, max_chars: int) -> list[str]:
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise HTTPProblem(422, '"texts" must be a list of strings')
    if not texts:
        raise HTTPProblem(422, '"texts" is empty')
    if len(texts) > max_texts:
        raise HTTPProblem(413, f"{len(texts)} texts in one request; the limit is {max_texts}")
    longest = max(len(t) for t in texts)
    if longest > max_chars:
        raise HTTPProblem(413, f"a text of {longest} characters; the limit is {max_chars}")
    return texts


REQUEST_FIELDS = ("texts", "text_pairs", "method", "target", "positions", "outside")


def _pairs(body: dict[str, Any], texts: list[str], max_chars: int) -> list[str] | None:
    pairs = body.get("text_pairs")
    if pairs is None:
        return None
    if not isinstance(pairs, list) or not all(isinstance(t, str) for t in pairs):
        raise HTTPProblem(422, '"text_pairs" must be a list of strings')
    if len(pairs) != len(texts):
        raise HTTPProblem(422, f'{len(texts)} texts and {len(pairs)} text_pairs: give one pair text per text')
    if pairs and max(len(t) for t in pairs) > max_chars:
        raise HTTPProblem(413, f"a text pair of {max(len(t) for t in pairs)} characters; the limit is {max_chars}")
    return pairs


def _task_options(model: Model, body: dict[str, Any]) -> dict[str, Any]:
    options = {k: body[k] for k in ("positions", "outside") if body.get(k) is not None}
    if options and model.manifest.task != "token-classification":
        raise HTTPProblem(422, f'"positions" and "outside" apply to token-classification bundles; this one is '
                               f"{model.manifest.task}")
    if "outside" in options and not isinstance(options["outside"], str):
        raise HTTPProblem(422, '"outside" must be a label name')
    return options


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The method options of a body, by their CLI names; the registry checks types and bounds."""
    allowed = set(all_options()) - {"batch_size"}
    unknown = set(body) - allowed - set(REQUEST_FIELDS)
    if unknown:
        raise HTTPProblem(422, f"unknown field(s) {sorted(unknown)}; allowed: {', '.join(REQUEST_FIELDS)}, "
                               f"{', '.join(sorted(allowed))}")
    return {k: v for k, v in body.items() if k in allowed}


def explain_payload(model: Model, body: dict[str, Any], max_texts: int, max_chars: int) -> dict[str, Any]:
    """The /v1/explain answer for a parsed body (also what the tests compare against the library)."""
    texts = _texts(body, max_texts, max_chars)
    method = body.get("method")
    if not isinstance(method, str) or method not in method_names():
        raise HTTPProblem(422, f'"method" must be one of {", ".join(method_names())}')
    if get_method(method).needs_gradient and not model.has_gradient:
        raise HTTPProblem(409, f"method {method!r} needs the gradient graph, which this bundle lacks; "
                               "use occlusion or fd, or re-export the bundle with `xai-onnx export`")
    options = _options(body)
    target = body.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise HTTPProblem(422, '"target" must be a label name, an index or "all"')
    try:
        explainer = make_explainer(model, method, options, strict=True)
    except InputError as exc:
        raise HTTPProblem(422, str(exc)) from exc
    pairs = _pairs(body, texts, max_chars)
    results = explainer.explain(texts, target=target, text_pairs=pairs, **_task_options(model, body))
    return {"method": method, "results": [r.to_dict() for r in results]}


def create_app(model: Model, *, max_texts: int = 64, max_chars: int = 10_000):
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise XaiOnnxError("the service needs the serve extra: pip install 'xai-onnx[serve]'") from exc

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPProblem(400, f"malformed JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HTTPProblem(422, "the body must be a JSON object")
        return body

    def guard(handler):
        async def wrapped(request: Request):
            try:
                return JSONResponse(await handler(request))
            except HTTPProblem as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            except GradientUnavailableError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            except XaiOnnxError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
        return wrapped

    async def health(_request: Request) -> dict[str, Any]:
        return {"status": "ok"}

    async def describe(_request: Request) -> dict[str, Any]:
        m = model.manifest
        table = [t for t in method_table() if model.has_gradient or not t["needs_gradient"]]
        return {"task": m.task, "labels": list(m.labels), "methods": [t["name"] for t in table], "method_options": table,
                "architecture": m.architecture, "max_length": m.max_length,
                "gradient": model.has_gradient, "limits": {"max_texts": max_texts, "max_chars": max_chars}}

    async def predict(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        texts = _texts(body, max_texts, max_chars)
        preds = await run_in_threadpool(model.predict, texts, _pairs(body, texts, max_chars))
        return {"results": [p.to_dict() for p in preds]}

    async def explain(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        return await run_in_threadpool(explain_payload, model, body, max_texts, max_chars)

    return Starlette(routes=[
        Route("/health", guard(health), methods=["GET"]),
        Route("/v1/model", guard(describe), methods=["GET"]),
        Route("/v1/predict", guard(predict), methods=["POST"]),
        Route("/v1/explain", guard(explain), methods=["POST"]),
    ])


def serve(model: Model, host: str = "127.0.0.1", port: int = 8000, **limits: int) -> None:
    app = create_app(model, **limits)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
