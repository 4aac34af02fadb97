"""Where an export writes: a work directory beside the destination, swapped into place only when complete.

Every transient file of an export lives in one hidden work directory ``.<name>.<random>`` beside the destination
``<name>``: the new bundle is built in ``<work>/bundle`` and swapped into place at the end; a pid file
(``<work>/export.pid``) names the export that owns it. SIGINT and SIGTERM remove the work directory; after SIGKILL
(or a power cut) the next export to the same destination removes it, once its owner is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from xai_onnx.manifest import MANIFEST_FILE

from .errors import ExportInputError

PID_FILE = "export.pid"
BUNDLE_DIR = "bundle"
OLD_DIR = "old"


class ExportTerminated(KeyboardInterrupt):
    """SIGTERM arrived during an export; raised like Ctrl-C so that the work directory is removed."""

    def __init__(self, signum: int):
        super().__init__(f"export stopped by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`ExportTerminated` for the duration (main thread only: elsewhere Python cannot
    install handlers, and the caller's own handling stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise ExportTerminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in parentheses may hold spaces


def _owner() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def _owner_alive(owner: dict[str, object]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's export (shared filesystem): not ours to judge
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = owner.get("start")
    return start is None or _process_start(pid) in (None, start)


def remove_stale_work_dirs(out: Path) -> list[Path]:
    """Remove the work directories of earlier exports to ``out`` whose process is gone (killed, or the machine
    stopped). Only directories named ``.<name>.*`` that hold this module's pid file are considered. Returns them."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.glob(f".{out.name}.*"):
        pid_file = entry / PID_FILE
        if entry.is_symlink() or not entry.is_dir() or not pid_file.is_file():
            continue
        try:
            owner = json.loads(pid_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(owner, dict) and not _owner_alive(owner):
            old = entry / OLD_DIR
            if not out.exists() and (old / MANIFEST_FILE).is_file():
                os.rename(old, out)  # killed between the two renames of swap_into_place's fallback: restore
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def check_output(out_dir: Path, overwrite: bool) -> Path:
    """The resolved destination, after refusing what cannot or must not be written."""
    out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportInputError(f"output {out_dir} exists and is not a directory: choose another path")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportInputError(f"output directory {out_dir} is not empty: choose another path or pass --overwrite")
        if not (out_dir / MANIFEST_FILE).is_file():
            raise ExportInputError(f"output directory {out_dir} is not empty and holds no bundle ({MANIFEST_FILE}): "
                                   "--overwrite replaces only a bundle directory; choose another path")
    parent = out_dir.parent
    while not parent.exists():
        parent = parent.parent
    try:  # a real write, not os.access: root passes access checks on read-only filesystems
        probe = tempfile.mkdtemp(prefix=".xai-onnx-probe.", dir=parent)
        os.rmdir(probe)
    except OSError as exc:
        raise ExportInputError(f"cannot write to {parent} ({exc.strerror}): choose an output directory you can write to") from exc
    return out_dir


def make_work_dir(out: Path) -> tuple[Path, Path]:
    """(work directory, bundle directory inside it) beside ``out``, the work directory tagged with this process."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    (work / PID_FILE).write_text(json.dumps(_owner()), encoding="utf-8")
    bundle = work / BUNDLE_DIR
    bundle.mkdir()  # made with the umask, like any directory the user creates (mkdtemp's are 0700)
    return work, bundle


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE). False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported by this kernel or filesystem
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_into_place(work: Path, bundle: Path, out: Path) -> None:
    """Move the finished ``bundle`` to ``out``. An existing ``out`` is exchanged with it in one step where the system
    can (Linux), so that ``out`` always holds the old bundle or the new one; elsewhere the old one is first moved
    aside into the work directory. Then the work directory (with the old bundle) is removed."""
    if out.exists():
        if not _exchange(bundle, out):
            os.rename(out, work / OLD_DIR)
            try:
                os.rename(bundle, out)
            except BaseException:
                os.rename(work / OLD_DIR, out)
                raise
    else:
        os.rename(bundle, out)
    shutil.rmtree(work, ignore_errors=True)
