"""Where a run keeps its raw results: the store (one checksummed ``.npy`` per finished work unit), the
work :class:`Unit`, and this process's place in a ``torchrun`` job (:class:`Dist`)."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MatchsigError

__all__ = ["Dist", "Store", "Unit", "single", "slug"]


# ---- distributed ---------------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        d = cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
        if world > 1:
            import torch.distributed as td

            if not td.is_initialized():
                import torch

                backend = "nccl" if torch.cuda.is_available() else "gloo"
                td.init_process_group(backend=backend)
        return d

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def mine(self, index: int) -> bool:
        return index % self.world == self.rank


# ---- the store -----------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A file-name-safe, readable and unique name for an ablation label."""
    readable = text.replace("<-", "_from_").replace("*", "ALL").replace(",", "+").replace("/", "h")
    readable = "".join(c if c.isalnum() or c in "_+-@." else "-" for c in readable)[:60]
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


class Store:
    """One file per finished unit under ``RUN_DIR/store``; writes are atomic (tmp + rename).

    Each file is a ``.npy`` array followed by the SHA-256 of those bytes (numpy ignores the trailer),
    so a truncated or corrupt file is found, counted in :attr:`bad` and recomputed instead of read.
    """

    DIGEST = 32

    def __init__(self, root: Path):
        self.root = root
        self.bad: dict[str, str] = {}  # unit -> why its file could not be used (reported by the caller)
        self._verified: set[str] = set()

    def path(self, unit: str) -> Path:
        return self.root / f"{unit}.npy"

    def has(self, unit: str) -> bool:
        """Whether the unit's file exists and is intact (a damaged file is left to be replaced)."""
        if unit in self._verified:
            return True
        if not self.path(unit).is_file():
            return False
        try:
            self._read(unit)
        except _Damaged as exc:
            self.bad.setdefault(unit, str(exc))
            return False
        self._verified.add(unit)
        return True

    def save(self, unit: str, array: np.ndarray) -> None:
        path = self.path(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        body = buffer.getvalue()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(body + hashlib.sha256(body).digest())
        os.replace(tmp, path)
        self._verified.add(unit)
        self.bad.pop(unit, None)

    def load(self, unit: str) -> np.ndarray:
        try:
            return self._read(unit)
        except _Damaged as exc:
            raise MatchsigError(f"store file {self.path(unit)} is {exc}; run again to recompute it") from None

    def _read(self, unit: str) -> np.ndarray:
        data = self.path(unit).read_bytes()
        body, digest = data[: -self.DIGEST], data[-self.DIGEST:]
        if len(data) <= self.DIGEST or hashlib.sha256(body).digest() != digest:
            if not _complete_npy(data):
                raise _Damaged("truncated or corrupt (checksum mismatch)")
            body = data  # a file of matchsig <= 0.1 (no checksum): whole, by its own header
        try:
            return np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _Damaged(f"unreadable ({exc})") from None

    def remove_leftovers(self) -> list[Path]:
        """Delete temporary files of writes a killed process never finished; returns them."""
        leftovers = sorted(self.root.rglob(".*.npy.*.tmp")) if self.root.is_dir() else []
        for path in leftovers:
            path.unlink(missing_ok=True)
        return leftovers


class _Damaged(Exception):
    pass


def _complete_npy(data: bytes) -> bool:
    """Whether ``data`` is exactly one whole ``.npy`` array (header + the bytes its shape and dtype call for).

    Store files written before checksums were added carry no trailer; they stay usable when their
    length is exactly what their header announces, so an upgrade does not recompute finished runs.
    A truncated legacy file fails this check (a bit flip inside one cannot be seen: no checksum).
    """
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        major, _ = npy.read_magic(stream)
        reader = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except (ValueError, OSError, EOFError, SyntaxError):
        return False
    if dtype.hasobject:
        return False
    return stream.tell() + dtype.itemsize * int(np.prod(shape, dtype=np.int64)) == len(data)


@dataclass
class Unit:
    """One piece of work of a phase: ``work()`` returns one array per name of ``files``.

    The runner saves the arrays of the files not yet in the store (a unit some of whose files
    survived a crash saves only the others; it recomputes the whole unit, so every stored array is
    computed with the same batches as in an uninterrupted run). ``size`` counts the unit's
    pair-configurations, for the progress bar.
    """

    name: str
    work: Callable[[], list[np.ndarray]]
    size: int
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = [self.name]


def single(name: str, compute: Callable[[], np.ndarray], size: int) -> Unit:
    """A unit that stores one array under its own name."""
    return Unit(name, lambda: [np.asarray(compute())], size)
