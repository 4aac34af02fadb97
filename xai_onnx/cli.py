"""The ``xai-onnx`` command. Other packages add subcommands through the ``xai_onnx.commands`` entry-point group
(the exporter adds ``export``); a plugin is imported only when its subcommand runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from .errors import XaiOnnxError
from .io import read_texts

EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory written by `xai-onnx export`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", help="one or more texts")
    src.add_argument("--input", help="a text file (one text a line) or JSONL with a \"text\" field")
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.add_argument("--providers", nargs="+", default=None, help="onnxruntime execution providers (default: CPU)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads")
    p.add_argument("--batch-size", type=int, default=64, help="rows per onnxruntime call")


def _texts(args: argparse.Namespace) -> list[str]:
    return list(args.text) if args.text is not None else read_texts(args.input)


def _model(args: argparse.Namespace):
    from .model import Model

    return Model(args.bundle, providers=args.providers, threads=args.threads, batch_size=args.batch_size)


def cmd_predict(args: argparse.Namespace) -> int:
    preds = _model(args).predict(_texts(args))
    if args.format == "json":
        print(json.dumps({"results": [p.to_dict() for p in preds]}, ensure_ascii=False))
    else:
        for p in preds:
            probs = "  ".join(f"{k}={v:.3f}" for k, v in p.probabilities.items())
            print(f"{p.label:<12} {probs}  {p.text}")
    return 0


def make_explainer(model: Any, method: str, options: dict[str, Any]):
    """An explainer from CLI/service option names (steps, integration, baseline, output, window, ...)."""
    from .errors import InputError
    from .methods import METHODS

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[method]
    common = {k: options[k] for k in ("baseline", "output") if options.get(k) is not None}
    if method == "ig":
        extra = {"n_steps": options.get("steps") or 50, "method": options.get("integration") or "gausslegendre",
                 "adaptive": bool(options.get("adaptive")), "internal_batch_size": options.get("batch_size")}
        if options.get("tolerance") is not None:
            extra["tolerance"] = options["tolerance"]
        return cls(model, **common, **extra)
    if method == "occlusion":
        return cls(model, **common, window=options.get("window") or 1, stride=options.get("stride") or 1)
    if method == "fd":
        return cls(model, **common, epsilon=options.get("epsilon") or 1e-2)
    return cls(model, **common)


def _format_text(r: Any) -> str:
    head = (f"{r.text!r}\n  predicted {r.label} ({r.probabilities[r.label]:.3f}); target {r.target.label}; "
            f"method {r.method}" + (f"; convergence delta {r.convergence_delta:+.2e}" if r.convergence_delta is not None else ""))
    peak = max((abs(float(s)) for s in r.scores), default=0.0) or 1.0
    lines = [head]
    for tok, s in zip(r.tokens, r.scores):
        bar = ("+" if s >= 0 else "-") * int(round(10 * abs(float(s)) / peak))
        lines.append(f"  {tok:<16} {float(s):+.5f} {bar}")
    lines += [f"  note: {w}" for w in r.warnings]
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    model = _model(args)
    explainer = make_explainer(model, args.method, vars(args))
    target = args.target
    if target is not None and target != "all" and target.lstrip("-").isdigit():
        target = int(target)
    results = explainer.explain(_texts(args), target=target)
    for r in results:
        if r.truncated:
            print(f"xai-onnx: note: {r.warnings[-1]}: {r.text[:40]!r}...", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"method": args.method, "results": [r.to_dict() for r in results]}, ensure_ascii=False))
    else:
        print("\n\n".join(_format_text(r) for r in results))
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, metadata.EntryPoint]]:
    from .methods import METHODS
    from .quadrature import METHODS as INTEGRATIONS

    parser = argparse.ArgumentParser(prog="xai-onnx", description="Explain transformer text classifiers with onnxruntime.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="labels and probabilities")
    _common(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("explain", help="token attributions")
    _common(p)
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--target", default=None, help="label name or index, or 'all' (default: the predicted class)")
    p.add_argument("--steps", type=int, default=None, help="IG steps (default 50)")
    p.add_argument("--integration", choices=INTEGRATIONS, default=None, help="IG integration rule")
    p.add_argument("--adaptive", action="store_true", help="IG: raise the steps until the delta is under --tolerance")
    p.add_argument("--tolerance", type=float, default=None, help="IG adaptive: relative convergence delta (0.01)")
    p.add_argument("--baseline", default=None, help="pad (default), mask, unk, zero, or a baseline text")
    p.add_argument("--output", choices=("prob", "logit"), default=None)
    p.add_argument("--window", type=int, default=None, help="occlusion window in tokens (1)")
    p.add_argument("--stride", type=int, default=None, help="occlusion stride (1)")
    p.add_argument("--epsilon", type=float, default=None, help="fd step (0.01)")
    p.set_defaults(func=cmd_explain)
    plugins = {}
    for ep in metadata.entry_points(group="xai_onnx.commands"):
        if ep.name not in sub.choices:
            plugins[ep.name] = ep
            q = sub.add_parser(ep.name, help=f"(plugin: run `xai-onnx {ep.name} --help`)", add_help=False)
            q.add_argument("rest", nargs=argparse.REMAINDER)
    return parser, plugins


def _run(func: Callable[[], int]) -> int:
    try:
        return func()
    except XaiOnnxError as exc:
        print(f"xai-onnx: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xai-onnx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI reports, never dumps a traceback
        print(f"xai-onnx: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, plugins = build_parser()
    if argv and argv[0] in plugins:
        ep = plugins[argv[0]]

        def plugin() -> int:
            try:
                entry = ep.load()
            except ImportError as exc:
                print(f"xai-onnx: error: `{argv[0]}` needs extra packages ({exc.name or exc}): "
                      f"pip install 'xai-onnx[{argv[0]}]'", file=sys.stderr)
                return EXIT_USAGE
            return int(entry(argv[1:]))

        return _run(plugin)
    args = parser.parse_args(argv)
    return _run(lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
