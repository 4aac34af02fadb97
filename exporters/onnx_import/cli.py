"""``xai-onnx import``: a subcommand the runtime's CLI finds through the ``xai_onnx.commands`` entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from xai_onnx.errors import XaiOnnxError
from xai_onnx.manifest import TASKS

from ..errors import ExportInputError, ValidationError
from .api import import_bundle
from .similarity import POOLINGS


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="xai-onnx import", description="Import an ONNX text model (an optimum export, or "
                                "any graph taking input_ids) into an explainer bundle, with a gradient graph built "
                                "on the ONNX graph itself (no torch): a sequence or token classifier, or an encoder "
                                "without a head (feature extraction) for similarity.")
    p.add_argument("source", nargs="?", help="a directory with model.onnx, tokenizer.json and config.json (optimum-cli export onnx)")
    p.add_argument("out_dir", nargs="?", help="bundle directory to create")
    p.add_argument("--model", default=None, help="the .onnx file (instead of SOURCE/model.onnx)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (instead of SOURCE/tokenizer.json)")
    p.add_argument("--labels", default=None, help="comma-separated class names (default: config.json's id2label)")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="what the model computes (default: detected from the graph's outputs, then config.json)")
    p.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="similarity: how token states become the sentence embedding (default: the sentence-transformers "
                        "1_Pooling/config.json next to the model, else mean)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="similarity: L2-normalise the embedding (default: whether modules.json has a Normalize module)")
    p.add_argument("--no-gradient", action="store_true", help="forward graph only (gradient methods unavailable)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--no-validate", action="store_true", help="skip the checks against the original graph and finite differences")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.out_dir is None and args.source is not None and args.model is not None:
        args.source, args.out_dir = None, args.source
    if args.out_dir is None:
        p.error("give SOURCE OUT_DIR, or --model FILE.onnx --tokenizer tokenizer.json OUT_DIR")
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    try:
        m = import_bundle(args.source, args.out_dir, model=args.model, tokenizer=args.tokenizer, labels=labels,
                          max_length=args.max_length, gradient=not args.no_gradient, overwrite=args.overwrite,
                          validate_import=not args.no_validate, task=args.task, pooling=args.pooling,
                          normalize=args.normalize)
    except ExportInputError as exc:
        print(f"xai-onnx import: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"xai-onnx import: validation failed: {exc}", file=sys.stderr)
        return 1
    except XaiOnnxError as exc:
        print(f"xai-onnx import: error: {exc}", file=sys.stderr)
        return 1
    summary = {"bundle": str(args.out_dir), "task": m.task, "architecture": m.architecture,
               "labels": list(m.labels), "max_length": m.max_length,
               "gradient": m.gradient is not None, "max_relative_error": m.validation.get("max_relative_error", {}),
               "import_seconds": m.validation.get("import_seconds")}
    if "forward_only" in m.validation:
        summary["forward_only"] = m.validation["forward_only"]
    if m.unavailable:
        summary["unavailable"] = m.unavailable
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
