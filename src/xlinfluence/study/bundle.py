"""The study bundle: a folder that carries a retraining study between stores and machines.

    bundle.json                    written once: format, the experiment's parameters, the
                                   manifests' checksums
    manifests/train.parquet        the base fine-tuning's rows (id, language, label, pair_id,
    manifests/test.parquet         text_sha256): a digest of the texts, never the texts
    runs/<run id>/run.json         one per run, written once: role, status, times, params,
                                   tags, metric histories, its files' checksums (and a
                                   retraining's kept ids)
    runs/<run id>/artifacts/...    the artifacts its analyses read (scores, evaluation
                                   outputs, analysis tables), as the run logged them

Files are append-only: an export adds the run folders it lacks (each written to a hidden
folder, then renamed, so a killed export leaves no half run), never rewrites one. Every
JSON file is sealed with the SHA-256 of its content and names the SHA-256 of each file it
owns, so a truncated, edited or incomplete bundle is refused before anything is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xlinfluence import provenance
from xlinfluence.data import schema
from xlinfluence.errors import XlinfluenceError

FORMAT = "xlinfluence-study"
VERSION = 1
BUNDLE_FILE = "bundle.json"
RUNS = "runs"
RECORD = "run.json"
ARTIFACTS = "artifacts"
TRAIN_MANIFEST = "manifests/train.parquet"
TEST_MANIFEST = "manifests/test.parquet"
TEXT_DIGEST = "text_sha256"
#: Roles of the runs in a bundle, in the order an import creates them (upstream first).
ROLES = ("train", "influence", "analyze", "main", "retraining")


class BundleError(XlinfluenceError):
    """A study bundle is missing, truncated, tampered with, or of another version."""


sha256_file = provenance.file_sha256


def _canonical(content) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def write_sealed(content: dict, path: Path) -> None:
    """`content` as JSON with the SHA-256 of its canonical form beside it."""
    sealed = {"sha256": hashlib.sha256(_canonical(content)).hexdigest(), "content": content}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sealed, indent=1, ensure_ascii=False) + "\n")


def read_sealed(path: Path, root: Path) -> dict:
    """A sealed file's content, or a BundleError naming what is wrong with it."""
    where = path.relative_to(root)
    if not path.is_file():
        raise BundleError(f"bundle {root}: {where} is missing; export the study again.")
    try:
        sealed = json.loads(path.read_text())
        content, seal = sealed["content"], sealed["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise BundleError(
            f"bundle {root}: {where} is truncated or not a bundle file ({type(err).__name__}); "
            "export the study again."
        ) from err
    if hashlib.sha256(_canonical(content)).hexdigest() != seal:
        raise BundleError(
            f"bundle {root}: {where} does not match its checksum (edited or damaged); "
            "export the study again."
        )
    return content


def text_digest(text: str, text_pair) -> str:
    """SHA-256 of an example's text fields: what a bundle keeps instead of the text."""
    pair = None if text_pair is None or pd.isna(text_pair) else str(text_pair)
    return hashlib.sha256(_canonical([str(text), pair])).hexdigest()


def digest_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """A manifest with its texts replaced by their digest (no dataset is redistributed)."""
    digests = [
        text_digest(t, p) for t, p in zip(frame[schema.TEXT], frame[schema.TEXT_PAIR], strict=True)
    ]
    keep = [c for c in frame.columns if c not in (schema.TEXT, schema.TEXT_PAIR)]
    return frame[keep].assign(**{TEXT_DIGEST: digests}).reset_index(drop=True)


def restore_texts(digested: pd.DataFrame, source: pd.DataFrame, what: str) -> pd.DataFrame:
    """The bundle's rows with the texts of `source` (re-read from the data), in the bundle's
    order; refused where a row is missing or its text's digest differs."""
    by_id = source.set_index(schema.ID)
    missing = digested.loc[~digested[schema.ID].isin(by_id.index), schema.ID].tolist()
    if missing:
        raise BundleError(
            f"the data source lacks {len(missing)} of the bundle's {what} rows (e.g. "
            f"{missing[0]!r}); point data_path at the data the study was made from."
        )
    rows = by_id.loc[digested[schema.ID]].reset_index()
    digests = [
        text_digest(t, p) for t, p in zip(rows[schema.TEXT], rows[schema.TEXT_PAIR], strict=True)
    ]
    differ = [
        i for i, (a, b) in enumerate(zip(digests, digested[TEXT_DIGEST], strict=True)) if a != b
    ]
    if differ:
        raise BundleError(
            f"{len(differ)} of the bundle's {what} texts differ from the data source (e.g. id "
            f"{rows[schema.ID].iloc[differ[0]]!r}); the study was made from other data: point "
            "data_path at that data."
        )
    columns = [c for c in schema.COLUMNS if c in rows.columns]
    return rows[columns]


@dataclass(frozen=True)
class Run:
    """One run of a bundle: its record and the folder of its files."""

    record: dict
    folder: Path

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def role(self) -> str:
        return self.record["role"]

    @property
    def artifacts(self) -> Path:
        return self.folder / ARTIFACTS


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its header, base manifests (digests) and runs by role."""

    root: Path
    header: dict
    train: pd.DataFrame
    test: pd.DataFrame
    runs: list[Run]

    def of_role(self, role: str) -> list[Run]:
        return [run for run in self.runs if run.role == role]


def read(root: Path) -> Bundle:
    """Read and verify a whole bundle (header, manifests, every run and file), or refuse
    it with one BundleError line; nothing is imported from a bundle that fails."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a folder; give the folder `study export` wrote.")
    header = read_sealed(root / BUNDLE_FILE, root)
    if header.get("format") != FORMAT:
        raise BundleError(
            f"{root} is not an xlinfluence study bundle (format {header.get('format')!r})."
        )
    if header.get("version") != VERSION:
        raise BundleError(
            f"bundle {root} is version {header.get('version')!r}; this xlinfluence reads version "
            f"{VERSION}: export it again with this version, or import it with the version that "
            f"wrote it ({header.get('xlinfluence', 'unknown')})."
        )
    _check_files(root, header["files"], root)
    runs = []
    for folder in sorted((root / RUNS).iterdir()) if (root / RUNS).is_dir() else []:
        if folder.name.startswith("."):
            continue  # an export that was killed mid-run: never renamed into place
        record = read_sealed(folder / RECORD, root)
        _check_files(folder / ARTIFACTS, record["files"], root)
        runs.append(Run(record, folder))
    return Bundle(
        root,
        header,
        pd.read_parquet(root / TRAIN_MANIFEST),
        pd.read_parquet(root / TEST_MANIFEST),
        runs,
    )


def _check_files(base: Path, files: dict[str, str], root: Path) -> None:
    for name, sha in files.items():
        path = base / name
        if not path.is_file():
            raise BundleError(
                f"bundle {root}: {path.relative_to(root)} is missing; export the study again."
            )
        if sha256_file(path) != sha:
            raise BundleError(
                f"bundle {root}: {path.relative_to(root)} does not match its checksum (edited "
                "or truncated); export the study again."
            )


def checksums(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under folder."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_run(root: Path, record: dict, staged: Path) -> None:
    """Add one run (its record and the files staged under `staged`) to the bundle, whole
    or not at all: it is written to a hidden folder and renamed into place."""
    target = root / RUNS / record["run_id"]
    (root / RUNS).mkdir(parents=True, exist_ok=True)
    hidden = Path(tempfile.mkdtemp(dir=root / RUNS, prefix=f".{record['run_id']}-"))
    try:
        shutil.move(str(staged), hidden / ARTIFACTS)
        write_sealed(record | {"files": checksums(hidden / ARTIFACTS)}, hidden / RECORD)
        os.rename(hidden, target)
    except BaseException:
        shutil.rmtree(hidden, ignore_errors=True)
        raise


def has_run(root: Path, run_id: str) -> bool:
    return (root / RUNS / run_id / RECORD).is_file()


def size_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
