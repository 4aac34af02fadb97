"""Engines that run xai-onnx over corpora beyond one process (``pip install 'xai-onnx[ray]'``).

Nothing here is imported by :mod:`xai_onnx` itself; this module declares the CLI flags (standard library only) and
:mod:`xai_onnx.distributed.ray` imports Ray inside the functions that need it:
``from xai_onnx.distributed.ray import explain_dataset``.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

#: input formats; by suffix (``.jsonl``/``.json``/``.ndjson``, ``.parquet``) unless given, else one text a line
INPUT_FORMATS = ("jsonl", "text", "parquet")
OUTPUT_FORMATS = ("parquet", "jsonl")


def add_engine_arguments(p: Any) -> None:
    """The ``--engine ray`` flags of ``explain`` and ``predict`` (argparse; nothing here imports Ray)."""
    g = p.add_argument_group("engine (default: local, streaming, no Ray needed)")
    g.add_argument("--engine", choices=("local", "ray"), default=None,
                   help="ray: read --input (a file, directory or glob) in parallel on a Ray cluster and write --out DIR")
    g.add_argument("--address", default=None, help="Ray cluster address (ray://HOST:10001 or HOST:6379; default: "
                   "$RAY_ADDRESS, else a local Ray on this machine)")
    g.add_argument("--workers", type=int, default=None, help="actors, each with one loaded bundle (default 1)")
    g.add_argument("--threads-per-worker", type=int, default=None, help="onnxruntime threads per actor (default 1)")
    g.add_argument("--cpus-per-worker", type=float, default=None, help="CPUs each actor reserves (default: its threads)")
    g.add_argument("--retries", type=int, default=None, help="restarts of a dead actor and resends of its batch (3)")
    g.add_argument("--out", default=None, help="output directory (new or empty), one file per output block")
    g.add_argument("--out-format", choices=OUTPUT_FORMATS, default=None, help="parquet (default) or jsonl")
    ship = g.add_mutually_exclusive_group()
    ship.add_argument("--ship-bundle", dest="ship_bundle", action="store_true", default=None,
                      help="put the bundle in Ray's object store and materialise it on every node (default: only when "
                      "some node does not see its path)")
    ship.add_argument("--no-ship-bundle", dest="ship_bundle", action="store_false",
                      help="never ship: the bundle must be at the same path on every node")


_RAY_ONLY = ("address", "workers", "threads_per_worker", "cpus_per_worker", "retries", "out", "out_format", "ship_bundle")


def check_local(args: Any) -> None:
    """Refuse Ray-only flags without ``--engine ray`` (they would be silently ignored)."""
    given = [k for k in _RAY_ONLY if getattr(args, k, None) is not None]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{flags}: only with --engine ray")
