"""A minimal progress bar on stderr: shown only on a terminal, never in pipes or CI logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.label, self.done = total, label, 0
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        width = 30
        frac = self.done / self.total if self.total else 1.0
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:.0f}s eta {eta:.0f}s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


class Stages:
    """Named stages of a long job on stderr, so that it never looks hung.

    Call it as ``stages(stage, detail)`` when a stage starts. On a terminal: one live line for the running stage with
    its elapsed time (refreshed each second from a daemon thread), left behind with its duration when the next starts.
    Elsewhere (pipes, CI logs): one line a call, with the time since the start.
    """

    def __init__(self, label: str, *, enabled: bool = True, stream: TextIO | None = None, live: bool | None = None):
        import threading

        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = self.stream.isatty() if live is None else live
        self.label = label
        self.start = self.stage_start = time.perf_counter()
        self.current: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled and self.live:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        if self.current is not None:
            self.stream.write(f"\r\x1b[K{self.label}: {self.current} ... {_clock(time.perf_counter() - self.stage_start)}")
            self.stream.flush()

    def __call__(self, stage: str, detail: str = "") -> None:
        if not self.enabled:
            return
        text = f"{stage}: {detail}" if detail else stage
        with self._lock:
            now = time.perf_counter()
            if not self.live:
                self.stream.write(f"{self.label}: [{_clock(now - self.start):>7}] {text}\n")
                self.stream.flush()
                return
            if self.current is not None:  # leave the finished stage behind with its duration
                self.stream.write(f"\r\x1b[K{self.label}: {self.current} ({_clock(now - self.stage_start)})\n")
            self.current, self.stage_start = text, now
            self._draw()

    def step(self, stage: str, detail: str) -> None:
        """A finished step of the running stage (a validated shape): its own line, with the time since the stage or
        its previous step began; the stage's live line goes on. Without a terminal, one line like any stage's."""
        if not self.enabled:
            return
        if not self.live or self.current is None:
            self(stage, detail)
            return
        with self._lock:
            now = time.perf_counter()
            self.stream.write(f"\r\x1b[K{self.label}: {stage}: {detail} ({_clock(now - self.stage_start)})\n")
            self.stage_start = now
            self._draw()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            if self.enabled and self.live and self.current is not None:
                self.stream.write(f"\r\x1b[K{self.label}: {self.current} ({_clock(time.perf_counter() - self.stage_start)})\n")
                self.stream.flush()
            self.current = None
