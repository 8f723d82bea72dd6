"""docs/findings.md is regenerated from the study bundles committed in studies/, by code
whose numbers equal this checkout's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from xlinfluence import provenance
from xlinfluence.study import bundle

from .conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
BUNDLES = sorted(
    p for p in (STUDIES.iterdir() if STUDIES.is_dir() else []) if (p / bundle.BUNDLE_FILE).is_file()
)
#: Bundles of older numbers code (studies/archive/README.md): whole and cited, kept as the
#: record of what that code computed; not checked against this checkout's numbers.
ARCHIVE = STUDIES / "archive"
ARCHIVED = sorted(
    p for p in (ARCHIVE.iterdir() if ARCHIVE.is_dir() else []) if (p / bundle.BUNDLE_FILE).is_file()
)
#: Tables of docs/findings.md regenerated from their bundles here: bundle -> the sentence
#: that heads the one table checked, or None for every table of the bundle's report (the
#: current studies; an archived one is checked where today's code still reads it the same).
CHECKED = {
    STUDIES / "ldm-sib200-a": None,
    STUDIES / "ldm-sib200-b": None,
    STUDIES / "lds-sib200-a-rows": None,
    ARCHIVE / "llo-sib200-fp32": "Change of L's mean test loss without X",
}


def _findings_tables():
    spec = importlib.util.spec_from_file_location(
        "findings_tables", ROOT / "scripts" / "findings_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_committed_bundle_is_whole_and_cited():
    page = (ROOT / "docs" / "findings.md").read_text()
    assert set(CHECKED) <= set(BUNDLES + ARCHIVED)
    for root in BUNDLES + ARCHIVED:
        bundle.read(root)  # every checksum holds
        cited = root.relative_to(ROOT).as_posix()
        assert cited in page, f"docs/findings.md does not cite {cited}"


@pytest.mark.parametrize("root", BUNDLES, ids=lambda p: p.name)
def test_bundles_were_made_by_code_whose_numbers_equal_this_checkouts(root):
    """A bundle stays citable only while this checkout computes its runs' numbers the same
    way: by the same source, or one a bit-for-bit check listed as equivalent.

    A run that carries no files (a `main` run: the bundle keeps no table of its) is left
    out: the tables docs/findings.md cites are not its but this checkout's, remade from
    the carried runs (next test), so a change to how an experiment aggregates needs no
    rerun of the study to stay checked."""
    for run in bundle.read(root).runs:
        if not run.record["files"]:
            continue
        step = run.record["tags"]["xlinfluence.step"]
        same = {provenance.source_digest(step), *provenance.equivalents(step)}
        assert run.record["tags"][provenance.SOURCE_TAG] in same, (
            f"{root.name}: run {run.run_id} ({step}) was made by other numbers code; rebuild "
            "the bundle, or list its source digest in numbers_equivalent.json after a "
            "bit-for-bit check"
        )


@pytest.mark.parametrize("root", sorted(CHECKED), ids=lambda p: p.name)
def test_a_findings_table_is_regenerated_from_its_committed_bundle(root):
    data = shared_data("sib200", "data", "annotated")  # the texts are re-read from here
    report = _findings_tables().bundle_report(root, str(data))
    page = (ROOT / "docs" / "findings.md").read_text()
    if CHECKED[root]:
        tables = [report.split(CHECKED[root], 1)[1].split("\n\n")[1]]
    else:
        tables = [block for block in report.split("\n\n") if block.startswith("| ")]
    assert tables and all(table.startswith("| ") for table in tables)
    for table in tables:
        assert table in page, f"docs/findings.md lacks this table of {root.name}:\n{table}"
