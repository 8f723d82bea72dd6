import math

import numpy as np
import pandas as pd
import pytest
import torch

from xlinfluence.analysis.mass import MASS_COLUMNS, example_mass, influence_mass
from xlinfluence.errors import ArtifactError


def frames():
    train = pd.DataFrame({"id": ["t0", "t1", "t2"], "language": ["en", "en", "de"]})
    test = pd.DataFrame({"id": ["s0", "s1", "s2", "s3"], "language": ["en", "de", "en", "de"]})
    return train, test


# rows: test s0 (en), s1 (de), s2 (en), s3 (de); columns: train t0 en, t1 en, t2 de
SCORES = torch.tensor(
    [
        [1.0, -2.0, 3.0],
        [-1.0, 4.0, 0.5],
        [2.0, 2.0, 0.0],
        [-1.0, -1.0, -3.0],  # no positive mass at all: its share is undefined
    ]
)


def test_hand_built_sums():
    train, test = frames()
    out = influence_mass({"epoch-1": SCORES, "total": 2 * SCORES}, train, test, n_resamples=50)
    assert list(out.columns) == list(MASS_COLUMNS)
    assert len(out) == 2 * 2 * 2  # checkpoints x test languages x train languages
    first = out[out["checkpoint"] == "epoch-1"].set_index(["test_language", "train_language"])
    assert first.index.tolist() == [("en", "en"), ("en", "de"), ("de", "en"), ("de", "de")]
    assert first["n_train_examples"].tolist() == [2, 1, 2, 1]
    assert first["n_test"].tolist() == [2, 2, 2, 2]
    # en tests s0, s2: positive sums en (1, 4), de (3, 0); negative en (-2, 0), de (0, 0)
    # de tests s1, s3: positive en (4, 0), de (0.5, 0); negative en (-1, -2), de (0, -3)
    assert first["proponent_mass"].tolist() == [2.5, 1.5, 2.0, 0.25]
    assert first["opponent_mass"].tolist() == [-1.0, 0.0, -1.5, -1.5]
    assert first["proponent_mass_per_example"].tolist() == [1.25, 1.5, 1.0, 0.25]
    # per-example fractions: s0 (1/4, 3/4), s2 (1, 0) -> mean (0.625, 0.375);
    # s1 (4/4.5, 0.5/4.5), s3 undefined (skipped)
    np.testing.assert_allclose(first["proponent_mass_share"], [0.625, 0.375, 8 / 9, 1 / 9])
    total = out[out["checkpoint"] == "total"]
    np.testing.assert_allclose(total["proponent_mass"], 2 * first["proponent_mass"].to_numpy())
    np.testing.assert_allclose(total["proponent_mass_share"], first["proponent_mass_share"])
    # de has one defined share, so its interval is the point; en's spans (0.25, 1)
    np.testing.assert_allclose(
        first.loc["de", "proponent_mass_share_ci_low"], first.loc["de", "proponent_mass_share"]
    )
    low, high = first.loc[
        ("en", "en"), ["proponent_mass_share_ci_low", "proponent_mass_share_ci_high"]
    ]
    assert 0.25 <= low <= 0.625 <= high <= 1.0


def test_example_mass_tables():
    train, test = frames()
    per = example_mass({"c": SCORES}, train, test)
    assert set(per) == {"proponent_mass", "opponent_mass", "proponent_mass_share"}
    share = per["proponent_mass_share"]
    assert list(share.columns) == [
        "checkpoint",
        "test_index",
        "test_id",
        "test_language",
        "en",
        "de",
    ]
    np.testing.assert_allclose(share[["en", "de"]].iloc[:3].sum(axis=1), 1.0)
    assert math.isnan(share["en"].iloc[3])
    assert per["proponent_mass"][["en", "de"]].values.tolist()[1] == [4.0, 0.5]


def test_matches_a_loop_on_random_scores(scores_by_name, train, test_frame):
    out = influence_mass(scores_by_name, train, test_frame, n_resamples=20)
    scores = scores_by_name["epoch-2"].double()
    langs = train["language"].to_numpy()
    for test_language in ("de", "en", "sw"):
        rows = np.flatnonzero(test_frame["language"].to_numpy() == test_language)
        for train_language in ("en", "de", "fr", "it"):
            cols = np.flatnonzero(langs == train_language)
            block = scores[rows][:, cols]
            got = out[
                (out["checkpoint"] == "epoch-2")
                & (out["test_language"] == test_language)
                & (out["train_language"] == train_language)
            ].iloc[0]
            assert got["proponent_mass"] == pytest.approx(block.clamp(min=0).sum(1).mean().item())
            assert got["opponent_mass"] == pytest.approx(block.clamp(max=0).sum(1).mean().item())
            total = scores[rows].clamp(min=0).sum(1)
            share = (block.clamp(min=0).sum(1) / total).mean().item()
            assert got["proponent_mass_share"] == pytest.approx(share)


def test_shape_mismatch_is_an_artifact_error():
    train, test = frames()
    with pytest.raises(ArtifactError, match="different runs"):
        influence_mass({"c": SCORES[:, :2]}, train, test)
