"""Rendered tracklets of the synthetic dataset, kept in memory for a run and on disk across the runs of a sweep.

A rendered tracklet depends only on (data seed, split, index, frame size, tracklet length) and on the renderer's
code, so a split rendered once serves every later run that asks for the same split: a sweep of 14 strategies on the
embedded default renders its 1,536 tracklets once instead of 14 times (about 12 s a run on this project's CPU).
The key includes a hash of ``data/synthetic.py`` itself, so a change to the renderer never reads a stale file.

Location: ``$PAR_BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vpar-peft-bench``, else ``~/.cache/vpar-peft-bench``;
``PAR_BENCH_CACHE_DIR=off`` keeps the cache in memory only. Files are written atomically (temporary file, then
rename), so concurrent runs and interrupted writes never leave a partial file.

A file is a plain ``.npy`` (any tool reads it) followed by a trailer, ``CHECKSUM_MARK`` and the SHA-256 of the frames
in hex, so bytes changed on disk are never used as data: a file that cannot be read, has no trailer (written before
it existed), does not match its checksum or has another shape is rendered again and rewritten, with one line on
stderr. The folder and its hash-named files are the cache's own, so rewriting one destroys nothing else.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_ENV = "PAR_BENCH_CACHE_DIR"
CHECKSUM_MARK = b"\nsha256:"  # after the array's bytes, then 64 hex digits


def cache_root() -> Path | None:
    """The disk cache folder, or None when ``PAR_BENCH_CACHE_DIR=off``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return None if configured.lower() == "off" else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vpar-peft-bench"


def source_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class TrackletCache:
    """(count, *shape) uint8 frames, filled by ``render(i)`` on first access; saved to disk once complete."""

    def __init__(self, *, count: int, shape: tuple[int, ...], key: dict, render: Callable[[int], np.ndarray]):
        self.render = render
        self.frames = np.zeros((count, *shape), np.uint8)  # untouched pages cost no memory until rendered
        self.ready = np.zeros(count, bool)
        root = cache_root()
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.path = None if root is None else root / f"tracklets-{name}.npy"
        self._load()

    def get(self, i: int) -> np.ndarray:
        """Frames of item ``i`` (a view: callers index or copy it, never write to it)."""
        if not self.ready[i]:
            self.frames[i] = self.render(i)
            self.ready[i] = True
            if self.ready.all():
                self._save()
        return self.frames[i]

    def _load(self) -> None:
        if self.path is None or not os.path.lexists(self.path):
            return
        stored, problem = read_checked(self.path)
        if problem is None and (stored.shape != self.frames.shape or stored.dtype != np.uint8):
            problem = f"holds {stored.dtype} frames of shape {stored.shape}, expected uint8 {self.frames.shape}"
        if problem is not None:
            print(f"warning: rendered-data cache {self.path}: {problem}; rendering the split again and rewriting it",
                  file=sys.stderr, flush=True)
            return
        self.frames, self.ready[:] = stored, True

    def _save(self) -> None:
        """Write the complete split atomically; a concurrent run writing the same file ends with identical bytes."""
        if self.path is None:
            return
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                np.save(file, self.frames, allow_pickle=False)
                file.write(CHECKSUM_MARK + frames_digest(self.frames).encode("ascii"))
            os.replace(temporary, self.path)
        except OSError:  # a read-only or full disk only costs the next run a re-render
            temporary.unlink(missing_ok=True)


def frames_digest(frames: np.ndarray) -> str:
    """SHA-256 of the frames' bytes in C order: what the trailer of a cache file states."""
    return hashlib.sha256(np.ascontiguousarray(frames).data).hexdigest()


def read_checked(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(frames, None) from a cache file whose trailer matches its frames, else (None, what is wrong with it)."""
    try:
        with open(path, "rb") as file:
            stored = np.load(file, allow_pickle=False)
            trailer = file.read(len(CHECKSUM_MARK) + 65)
    except (OSError, ValueError, EOFError) as error:  # numpy says "cannot read" in these three ways
        return None, f"cannot be read ({type(error).__name__}: {error})"
    if not trailer.startswith(CHECKSUM_MARK):
        return None, "carries no checksum"
    if trailer[len(CHECKSUM_MARK):] != frames_digest(stored).encode("ascii"):
        return None, "does not match its checksum"
    return stored, None
