"""URIEL distances from lang2vec's archives, and the Mantel-style permutation test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlinfluence.analysis import distance
from xlinfluence.errors import ConfigError

LANGS = ["en", "de", "fr", "ru", "zh"]


def test_distances_are_symmetric_and_rank_close_languages_first():
    matrices = distance.distance_matrices(LANGS)
    for kind, matrix in matrices.items():
        values = matrix.to_numpy()
        assert np.allclose(values, values.T), kind
        assert np.allclose(np.diag(values), 0, atol=1e-6), kind
    genetic = matrices["genetic"]
    assert genetic.loc["en", "de"] < genetic.loc["en", "ru"] < genetic.loc["en", "zh"]
    assert matrices["different_script"].loc["en", "fr"] == 0
    assert matrices["different_script"].loc["ru", "zh"] == 1


def test_flores_and_short_codes_agree():
    short = distance.distance_matrices(["en", "ru", "zh"])["syntactic"].to_numpy()
    flores = distance.distance_matrices(["eng_Latn", "rus_Cyrl", "zho_Hans"])["syntactic"]
    assert np.allclose(short, flores.to_numpy())
    with pytest.raises(ConfigError):
        distance.iso3("xx")


def test_mantel_test_finds_shares_that_follow_distance():
    genetic = distance.distance_matrices(LANGS)["genetic"]
    shares = 1.0 - genetic  # closer languages take more of each other's top-k
    table = distance.correlations(shares).set_index("distance")
    assert table.loc["genetic", "spearman_rho"] == pytest.approx(-1.0)
    assert table.loc["genetic", "n_permutations"] == 120  # every permutation of 5 languages
    assert table.loc["genetic", "mantel_p"] < 0.05
    rng = np.random.default_rng(0)
    noise = pd.DataFrame(rng.random((5, 5)), index=LANGS, columns=LANGS)
    assert distance.correlations(noise).set_index("distance").loc["genetic", "mantel_p"] > 0.05


def test_too_few_languages_give_nothing():
    two = pd.DataFrame([[0.5, 0.5], [0.5, 0.5]], index=["en", "de"], columns=["en", "de"])
    assert distance.correlations(two).empty
