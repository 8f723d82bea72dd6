"""Does counterfactual retraining find the plant? The planted generator, the tiny model.

Fine-tunes the tiny preset on the planted-structure data (src, its word-by-word
translation tra, and iso, which shares nothing), scores exact TracIn at every epoch, then
for each (test language L, training language X) retrains from the same seed without
TracIn's top-k of X for L and, as the control, without k random examples of X with the
same labels (analysis/counterfactual.py, as `-P experiment=counterfactual` does), and
prints L's paired test-loss change for each. Not a test: it reports what it sees.

    python bench/planted_counterfactual.py --epochs 20 --learning-rate 7e-4 --k 8
"""

from __future__ import annotations

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
from xlinfluence.data.planted import ISOLATED, SOURCE, TRANSLATION, planted_splits
from xlinfluence.tracin.engine import checkpoint_scores

PAIRS = [(SOURCE, SOURCE), (SOURCE, TRANSLATION), (ISOLATED, TRANSLATION), (ISOLATED, SOURCE)]


@click.command()
@click.option("--per-language", default=64, show_default=True)
@click.option("--test-per-language", default=16, show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--learning-rate", default=7e-4, show_default=True)
@click.option("--k", default=8, show_default=True, help="examples removed per (L, X)")
@click.option("--draws", default=3, show_default=True, help="random control removals")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=1, show_default=True)
def main(per_language, test_per_language, epochs, learning_rate, k, draws, seed, threads):
    torch.set_num_threads(threads)
    splits = planted_splits(per_language, test_per_language, seed)
    train, test = splits.train, splits.test
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
    languages = test[schema.LANGUAGE].to_numpy()
    base = saved[-1][0].predictions.assign(language=languages)
    print(
        f"base run {seconds:.1f} s; accuracy", base.groupby("language")["correct"].mean().to_dict()
    )
    total = torch.zeros(len(test), len(train))
    for _, info, directory in saved:
        model, tokenizer = modeling.load_checkpoint(directory)
        total += info.learning_rate * checkpoint_scores(
            model,
            make_loader(TokenizedExamples(train, tokenizer, 64), 32),
            make_loader(TokenizedExamples(test, tokenizer, 64), 32),
            n_train=len(train), n_test=len(test),
        )  # fmt: skip
    rows = []
    for test_language, train_language in PAIRS:
        for kind, draw in [(cf.TRACIN, 0)] + [(cf.RANDOM, d) for d in range(draws)]:
            removal = cf.Removal(kind, "0" * 32, test_language, train_language, k, draw)
            ids = set(cf.removed_ids(removal, total, train, test, seed))
            exclude = set(np.flatnonzero(train[schema.ID].isin(ids)).tolist())
            retrained = fit(exclude, f"{test_language}-{train_language}-{kind}-{draw}")
            predictions = retrained[-1][0].predictions.assign(language=languages)
            effect = cf.paired_effect(base, predictions, test_language)
            rows.append(
                {"test_language": test_language, "train_language": train_language, "kind": kind,
                 "draw": draw, "k": k} | effect
            )  # fmt: skip
            print(rows[-1], flush=True)
    table = cf.effects_table([r | {"seconds": 0.0} for r in rows])
    columns = [
        "test_language", "train_language", "tracin_delta_loss", "control_delta_loss_mean",
        "control_delta_loss_min", "control_delta_loss_max", "p_control", "supported",
    ]  # fmt: skip
    with pd.option_context("display.width", 200):
        print(table[columns].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
