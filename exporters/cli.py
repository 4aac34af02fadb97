"""``xai-onnx export``: a subcommand the runtime's CLI finds through the ``xai_onnx.commands`` entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from xai_onnx.errors import XaiOnnxError

from .api import export_bundle
from .errors import ExportInputError, ValidationError


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="xai-onnx export", description="Export a Hugging Face classifier to an explainer bundle.")
    p.add_argument("source", help="a Hugging Face sequence-classification directory, or a sentence-transformers encoder")
    p.add_argument("out_dir", help="bundle directory to create")
    p.add_argument("--head", default=None, help="linear head .npz (W: labels x hidden, b, labels) for an encoder source")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-gradient", action="store_true", help="forward graph only (gradient methods unavailable)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--no-validate", action="store_true", help="skip the check against torch autograd")
    args = p.parse_args(list(argv))
    try:
        m = export_bundle(args.source, args.out_dir, head=args.head, max_length=args.max_length, opset=args.opset,
                          gradient=not args.no_gradient, overwrite=args.overwrite, validate_export=not args.no_validate)
    except ExportInputError as exc:
        print(f"xai-onnx export: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"xai-onnx export: validation failed: {exc}", file=sys.stderr)
        return 1
    except XaiOnnxError as exc:
        print(f"xai-onnx export: error: {exc}", file=sys.stderr)
        return 1
    errors = m.validation.get("max_relative_error", {})
    print(json.dumps({"bundle": str(args.out_dir), "architecture": m.architecture, "labels": list(m.labels),
                      "max_length": m.max_length, "gradient": m.gradient is not None, "max_relative_error": errors}))
    return 0
