"""Chunked, resumable TracIn work: the plan of chunks and their files on disk.

A chunk is one checkpoint's scores for a range of test rows x a range of train columns,
with the self-influence of both sides. Each is written as soon as it is done, as
safetensors with metadata that names the chunk and a fingerprint of everything that
determines its numbers; a restarted run reuses exactly the chunks whose fingerprint
matches and recomputes the rest, so its final tensors equal an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xlinfluence.errors import ArtifactError


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
        save_file(
            {k: v.float().contiguous().cpu() for k, v in tensors.items()},
            str(partial),
            metadata={"fingerprint": self.fingerprint, "chunk": chunk.filename},
        )
        partial.rename(path)  # a killed write never looks finished
        return path

    def done(self, chunk: Chunk) -> bool:
        """True for a complete file of this chunk; a file from other parameters is an error."""
        path = self.path(chunk)
        if not path.is_file():
            return False
        metadata = self._metadata(path)
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
                f"chunk {path} is unreadable ({err}); delete it to have it recomputed."
            ) from err
        if tuple(tensors["scores"].shape) != (len(chunk.rows), len(chunk.cols)):
            raise ArtifactError(f"chunk {path} has the wrong shape; delete it to recompute it.")
        return tensors

    @staticmethod
    def _metadata(path: Path) -> dict:
        try:
            with safe_open(str(path), framework="pt") as handle:
                return handle.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise ArtifactError(
                f"chunk {path} is unreadable ({err}); delete it to have it recomputed."
            ) from err
