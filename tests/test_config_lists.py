"""List-valued settings are parsed once, by the config, into typed properties: what every
step reads instead of splitting the logged strings itself."""

import pytest

from xlinfluence.checks import items, pairs
from xlinfluence.config import InfluenceConfig, TrainConfig
from xlinfluence.config.main import MainConfig
from xlinfluence.errors import ConfigError


def test_items_and_pairs_keep_order_and_drop_blanks():
    assert items(" en, de ,,fr ") == ("en", "de", "fr")
    assert items("") == ()
    assert pairs("text=premise, text_pair = hypothesis") == {
        "text": "premise",
        "text_pair": "hypothesis",
    }
    assert list(pairs("b=1,a=2")) == ["b", "a"]


def test_data_settings_are_typed():
    config = TrainConfig(
        languages="en, de,fr", heldout_language="fr", train_per_language="de=100, en=400"
    )
    assert config.language_codes == ("en", "de", "fr")
    assert config.train_languages == ("en", "de")
    assert config.heldout == "fr"
    assert config.train_counts == {"en": 400, "de": 100}  # the languages' order, not the text's
    assert TrainConfig(languages="en,de", train_per_language="7").train_counts == {
        "en": 7,
        "de": 7,
    }
    mapped = TrainConfig(dataset="local", data_path=".", column_map="text=premise")
    assert mapped.columns == {"text": "premise"}
    assert TrainConfig().columns == {}


def test_a_count_for_the_heldout_language_is_ignored():
    config = TrainConfig(languages="en,sw", heldout_language="sw", train_per_language="en=10,sw=99")
    assert config.train_counts == {"en": 10}


@pytest.mark.parametrize(
    ("counts", "said"),
    [("en=400,de=100", r"no count for \['fr'\]"), ("en=1,de=1,fr=1,sw=2", r"\['sw'\] are not")],
)
def test_counts_that_do_not_fit_the_languages_are_refused(counts, said):
    with pytest.raises(ConfigError, match=f"train_per_language=.*{said}"):
        TrainConfig(languages="en,de,fr", train_per_language=counts)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("languages", "en,en", "named twice"),
        ("languages", "en,,de", "not language codes"),
        ("train_per_language", "en=0", "cannot read"),
        ("train_per_language", "many", "cannot read"),
        ("column_map", "text", "cannot read"),
        ("column_map", "txt=premise", "cannot read"),
        ("column_map", "text=a,text=b", "given twice"),
    ],
)
def test_bad_list_settings_are_refused_when_the_config_is_built(field, value, said):
    extra = {"dataset": "local", "data_path": "."} if field == "column_map" else {}
    with pytest.raises(ConfigError, match=f"{field}=.*{said}"):
        TrainConfig(**{field: value}, **extra)


def test_checkpoint_names():
    run = "0" * 32
    assert InfluenceConfig(train_run_id=run, checkpoints="all").checkpoint_names is None
    named = InfluenceConfig(train_run_id=run, checkpoints="epoch-3, epoch-1")
    assert named.checkpoint_names == (
        "epoch-3",
        "epoch-1",
    )


def test_experiment_values():
    config = MainConfig(experiment="seeds", experiment_values="3,1")
    assert config.values == ("3", "1")
    assert MainConfig().values == ()
