"""Does TracIn name the plant, and does removing what it names hurt? The loanword plant.

The planted generator with loanwords (data/planted.py, borrowed_keywords=1): src's test
sentences each carry a keyword that src's training set never has and that only some of
tra's training rows (the carriers) write, with src's own character; iso shares nothing.
So src's test set depends on exactly those carriers, a known answer. This script

1. fine-tunes the tiny preset on it and scores exact TracIn at every epoch, twice: dot
   over all parameters (the influence step's default) and cosine over the word embeddings
   (the influence step's `method=cosine, params=word_embeddings`);
2. prints, per attribution, how many of tra's top-k for src are carriers (precision against
   the carriers' base rate among tra's rows);
3. retrains (analysis/counterfactual.py's removals, as `-P experiment=counterfactual`
   does) without each attribution's top-k of X for L, and without `--draws` label-matched
   random sets of k; and once without all the carriers (the oracle), and prints L's paired
   test-loss change for each, per (L, X) in (src, tra) and (iso, tra).

Not a test: it reports what it sees (tests/test_planted.py holds the asserted parts).

    python bench/planted_counterfactual.py --k 8 --draws 3
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from xlinfluence import modeling, training
from xlinfluence.analysis import counterfactual as cf
from xlinfluence.data import schema
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.data.planted import (
    ISOLATED,
    LOANWORD_PLANT,
    SOURCE,
    TRANSLATION,
    carriers,
    planted_splits,
)
from xlinfluence.tracin.engine import checkpoint_scores
from xlinfluence.tracin.selection import parameter_filter

PAIRS = [(SOURCE, TRANSLATION), (ISOLATED, TRANSLATION)]
#: (name, method, params): the default and the attribution that names the most carriers
ATTRIBUTIONS = [("dot-all", "dot", "all"), ("cosine-word-embeddings", "cosine", "word_embeddings")]


@click.command()
@click.option("--per-language", default=64, show_default=True)
@click.option("--test-per-language", default=32, show_default=True)
@click.option("--epochs", default=30, show_default=True)
@click.option("--learning-rate", default=5e-4, show_default=True)
@click.option("--k", default=8, show_default=True, help="examples removed per (L, X)")
@click.option("--draws", default=3, show_default=True, help="random control removals")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=2, show_default=True)
def main(per_language, test_per_language, epochs, learning_rate, k, draws, seed, threads):
    torch.set_num_threads(threads)
    splits = planted_splits(per_language, test_per_language, seed, **LOANWORD_PLANT)
    train, test = splits.train, splits.test
    languages = test[schema.LANGUAGE].to_numpy()
    carrier = carriers(train)
    root = Path(tempfile.mkdtemp(prefix="planted-cf-"))

    def fit(exclude: set[int], name: str):
        built = modeling.build(
            "tiny", num_labels=len(splits.label_names),
            train_texts=train[schema.TEXT].tolist(), test_texts=[], seed=seed,
        )  # fmt: skip
        saved = []
        training.fine_tune(
            built.model, built.tokenizer, train, test, epochs=epochs, batch_size=8,
            learning_rate=learning_rate, weight_decay=0.01, warmup_ratio=0.1, max_length=64,
            seed=seed, accelerator=Accelerator(cpu=True), checkpoint_root=root / name,
            on_epoch_end=lambda m, i, d: saved.append((m, i, d)), exclude_rows=exclude,
        )  # fmt: skip
        return saved

    started = time.perf_counter()
    saved = fit(set(), "base")
    seconds = time.perf_counter() - started
    base = saved[-1][0].predictions.assign(language=languages)
    accuracy = base.groupby("language")["correct"].mean().round(3).to_dict()
    print(f"base run {seconds:.1f} s; test accuracy {accuracy}")
    totals = {name: torch.zeros(len(test), len(train)) for name, _, _ in ATTRIBUTIONS}
    for _, info, directory in saved:
        model, tokenizer = modeling.load_checkpoint(directory)
        for name, method, params in ATTRIBUTIONS:
            totals[name] += info.learning_rate * checkpoint_scores(
                model,
                make_loader(TokenizedExamples(train, tokenizer, 64), 32),
                make_loader(TokenizedExamples(test, tokenizer, 64), 32),
                n_train=len(train), n_test=len(test),
                param_filter=parameter_filter(params, model), cosine=method == "cosine",
            )  # fmt: skip
    tra_rows = train[schema.LANGUAGE].to_numpy() == TRANSLATION
    print(f"carriers: {carrier.sum()} of tra's {tra_rows.sum()} rows")

    rows = []

    def remove(label: str, test_language: str, train_language: str, removed: np.ndarray):
        """Retrain without `removed` rows; record L's paired loss change."""
        retrained = fit(set(removed.tolist()), label)[-1][0].predictions
        change = cf.paired_effect(base, retrained.assign(language=languages), test_language)
        rows.append(
            (label, test_language, train_language, len(removed), int(carrier[removed].sum()),
             change[cf.DELTA_LOSS])
        )  # fmt: skip
        print(rows[-1], flush=True)

    remove("carriers (oracle)", SOURCE, TRANSLATION, np.flatnonzero(carrier))
    for name, total in totals.items():
        for test_language, train_language in PAIRS:
            removal = cf.Removal(cf.TRACIN, "0" * 32, test_language, train_language, k)
            picks = cf.tracin_rows(total, train, test, removal)
            remove(f"{name} top-{k}", test_language, train_language, picks)
            for draw in range(draws):
                random = dataclasses.replace(removal, kind=cf.RANDOM, draw=draw)
                control = cf.random_rows(train, picks, random, seed)
                remove(f"{name} random-{draw}", test_language, train_language, control)
    table = pd.DataFrame(
        rows, columns=["removed", "test_language", "train_language", "k", "carriers", "delta_loss"]
    )
    with pd.option_context("display.width", 200):
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
