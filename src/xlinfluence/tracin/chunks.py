"""Chunked, resumable TracIn work: the plan of chunks and their files on disk.

A chunk is one checkpoint's scores for a range of test rows x a range of train columns,
with the self-influence of both sides. Each is written as soon as it is done, as
safetensors with metadata that names the chunk and a fingerprint of everything that
determines its numbers; a restarted run reuses exactly the chunks whose fingerprint
matches and recomputes the rest, so its final tensors equal an uninterrupted run's. A
chunk file that cannot be read (cut short in the artifact store, which cannot delete one
file) is recomputed like a missing one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xlinfluence.errors import ArtifactError, DiskFullError, is_disk_full

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    checkpoint: str
    rows: range  # test rows
    cols: range  # train columns

    @property
    def filename(self) -> str:
        return (
            f"{self.checkpoint}/r{self.rows.start:07d}-{self.rows.stop:07d}"
            f"_c{self.cols.start:09d}-{self.cols.stop:09d}.safetensors"
        )


def ranges(n: int, size: int | None) -> list[range]:
    """[0, n) cut into consecutive ranges of `size` (one range when size is None or 0)."""
    size = size or n
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def fingerprint(**determinants) -> str:
    """A short hash of what fixes a chunk's numbers (run, parameter set, precision, code)."""
    text = json.dumps(determinants, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ChunkStore:
    """A folder of chunk files, all with the same fingerprint."""

    def __init__(self, root: Path, fingerprint: str):
        self.root = root
        self.fingerprint = fingerprint

    def path(self, chunk: Chunk) -> Path:
        return self.root / chunk.filename

    def save(
        self,
        chunk: Chunk,
        scores: torch.Tensor,  # (len(rows), len(cols))
        test_self: torch.Tensor | None,  # (len(rows),), when self-influence is wanted
        train_self: torch.Tensor | None,  # (len(cols),), then with the first test chunk only
    ) -> Path:
        tensors = {"scores": scores}
        if test_self is not None:
            tensors["test_self"] = test_self
        if train_self is not None:
            tensors["train_self"] = train_self
        path = self.path(chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        tensors = {k: v.float().contiguous().cpu() for k, v in tensors.items()}
        try:
            save_file(
                tensors,
                str(partial),
                metadata={"fingerprint": self.fingerprint, "chunk": chunk.filename},
            )
            partial.rename(path)  # a killed write never looks finished
        except (SafetensorError, OSError) as err:
            partial.unlink(missing_ok=True)
            if not is_disk_full(err):
                raise
            needed = sum(t.numel() * t.element_size() for t in tensors.values())
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                f"no space left on the disk holding {path.parent} while writing influence "
                f"chunk {chunk.filename} ({needed / 2**20:.1f} MiB needed, "
                f"{free / 2**20:.1f} MiB free); free space there or point TMPDIR at a larger "
                "disk, and resume the run: the chunks already logged are kept."
            ) from err
        return path

    def done(self, chunk: Chunk) -> bool:
        """True for a complete file of this chunk; an unreadable one is removed, to be
        recomputed; a file from other parameters is an error."""
        path = self.path(chunk)
        if not path.is_file():
            return False
        try:
            metadata, shape = self._header(path)
            unusable = shape != (len(chunk.rows), len(chunk.cols)) and f"scores of shape {shape}"
        except ArtifactError as err:
            metadata, unusable = {}, str(err)
        if unusable:  # cut short, or another chunk's file
            log.warning("recomputing chunk %s: %s", chunk.filename, unusable)
            path.unlink()
            return False
        if metadata.get("fingerprint") != self.fingerprint:
            raise ArtifactError(
                f"chunk {path.name} was computed with other parameters or code "
                f"(fingerprint {metadata.get('fingerprint')} != {self.fingerprint}); resume "
                "only with the same train run, params, precision, chunk sizes and code, or "
                "start a fresh influence run."
            )
        return True

    def load(self, chunk: Chunk) -> dict[str, torch.Tensor]:
        path = self.path(chunk)
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except (SafetensorError, OSError) as err:
            raise ArtifactError(
                f"chunk {path} became unreadable ({err}); run the step again with the same "
                "resume settings: it recomputes unreadable chunks."
            ) from err
        return tensors

    @staticmethod
    def _header(path: Path) -> tuple[dict, tuple[int, ...]]:
        """(metadata, shape of the scores) of a chunk file, reading no tensor."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                return handle.metadata() or {}, tuple(handle.get_slice("scores").get_shape())
        except (SafetensorError, OSError) as err:
            raise ArtifactError(f"chunk {path} is unreadable ({err})") from err
