"""Chunk files on disk: what resume may reuse, what it recomputes, and a full disk."""

from __future__ import annotations

import logging

import pytest
import torch

from xlinfluence.errors import ArtifactError, DiskFullError
from xlinfluence.tracin.chunks import Chunk, ChunkStore

CHUNK = Chunk("epoch-1", range(0, 4), range(0, 3))


def _saved(root, fingerprint="abc") -> ChunkStore:
    store = ChunkStore(root, fingerprint)
    store.save(CHUNK, torch.arange(12.0).reshape(4, 3), torch.ones(4), torch.ones(3))
    return store


def test_a_saved_chunk_is_done_and_loads_as_saved(tmp_path):
    store = _saved(tmp_path)
    assert store.done(CHUNK)
    assert torch.equal(store.load(CHUNK)["scores"], torch.arange(12.0).reshape(4, 3))


def test_a_chunk_cut_short_is_removed_to_be_recomputed(tmp_path, caplog):
    """What an artifact store holds after an interrupted upload: resume recomputes it
    (MLflow cannot delete one artifact, so "delete it" would block the run for good)."""
    store = _saved(tmp_path)
    path = store.path(CHUNK)
    path.write_bytes(path.read_bytes()[:-20])
    with caplog.at_level(logging.WARNING, logger="xlinfluence.tracin.chunks"):
        assert not store.done(CHUNK)
    assert not path.exists() and "recomputing chunk epoch-1/r0000000" in caplog.text
    _saved(tmp_path)
    assert store.done(CHUNK)


def test_another_chunks_file_under_this_name_is_recomputed(tmp_path):
    store = _saved(tmp_path)
    other = Chunk("epoch-1", range(0, 2), range(0, 3))
    store.save(other, torch.zeros(2, 3), None, None)
    store.path(other).replace(store.path(CHUNK))
    assert not store.done(CHUNK) and not store.path(CHUNK).exists()


def test_a_chunk_from_other_parameters_is_refused(tmp_path):
    _saved(tmp_path, fingerprint="abc")
    with pytest.raises(ArtifactError, match="computed with other parameters"):
        ChunkStore(tmp_path, "def").done(CHUNK)


def test_a_full_disk_names_the_chunk_and_the_space_it_needed(small_disk):
    store = ChunkStore(small_disk, "abc")
    big = Chunk("epoch-1", range(0, 512), range(0, 1024))  # 2 MiB of scores
    with pytest.raises(DiskFullError, match=r"no space left on the disk holding .*small.* while "
                       r"writing influence chunk epoch-1/r0000000-0000512_c000000000-000001024"
                       r"\.safetensors \(2\.0 MiB needed, 0\.\d MiB free\)"):  # fmt: skip
        store.save(big, torch.zeros(512, 1024), None, None)
    assert not list(small_disk.rglob("*.partial")) and not store.done(big)
