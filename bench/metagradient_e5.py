"""Exact metagradients (training/metagradient.py) on e5-small with real SIB-200 rows:
how close they come to finite differences of real retrainings, and what one output costs.

For one setting (rows per language, epochs, batch size, dtype) this script builds the
pipeline's own model (e5-small, vocabulary trimmed to the rows, seeded head), cuts the
training into the same shuffled batches and linear-warmup learning rates as the train step
(training.epoch_batches, learning_rates), fixes dropout's masks by one RNG state per step
(seeded from (seed, step), where the train step records its own), and replays it
functionally (steps/replay.py does the same from a logged run). The replay is deterministic,
so finite differences of retrainings are exact up to rounding. It prints, as one JSON line:

- `seconds_metagradient`: one output (a test language's mean loss) differentiated with
  respect to every training row's weight, through the whole AdamW run;
- `seconds_training`: the same replay without gradients (one plain training), and the ratio;
- `peak_rss_gib`: the process's peak resident memory (run each setting in its own process);
- with `--check N`: for N training rows, central finite differences of retrainings with that
  row's weight moved by +-h, and the largest relative error against the metagradient.

    python bench/metagradient_e5.py --per-language 8 --epochs 1 --dtype float64 --check 3
    python bench/metagradient_e5.py --per-language 20 --epochs 2 --segment 4

Not a test: tests/training/test_metagradient.py asserts exactness on a tiny model.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import click
import torch
from tracin_setup import SIB200, sib200_e5

from xlinfluence.data import schema
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.steps import set_threads
from xlinfluence.training import epoch_batches, learning_rates
from xlinfluence.training import metagradient as mg


def _rng_states(seed: int, steps: int) -> list[torch.Tensor]:
    """One CPU RNG state per step, seeded from (seed, step): dropout's masks, fixed."""
    states = []
    for step in range(steps):
        torch.manual_seed(seed * 1_000_003 + step)
        states.append(torch.get_rng_state())
    return states


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


@click.command()
@click.option("--data-path", default=str(SIB200), show_default=True)
@click.option("--languages", default="en,de,fr,ru,zh", show_default=True)
@click.option("--per-language", default=8, show_default=True, help="training rows per language")
@click.option("--test-per-language", default=8, show_default=True)
@click.option("--output-language", default="de", show_default=True,
              help="the output: this test language's mean loss")  # fmt: skip
@click.option("--epochs", default=1, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--learning-rate", default=1e-4, show_default=True)
@click.option("--max-length", default=128, show_default=True)
@click.option("--segment", default=0, show_default=True,
              help="steps recomputed together in the backward pass (0: one per step)")  # fmt: skip
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32")
@click.option("--check", default=0, show_default=True, help="rows checked by finite differences")
@click.option("--step-size", "h", default=1e-4, show_default=True, help="finite-difference h")
@click.option("--threads", default=2, show_default=True)
@click.option("--seed", default=42, show_default=True)
def main(data_path, languages, per_language, test_per_language, output_language, epochs,
         batch_size, learning_rate, max_length, segment, dtype, check, h, threads,
         seed):  # fmt: skip
    if not Path(data_path).exists():
        raise click.UsageError(f"no SIB-200 data at {data_path}; pass --data-path.")
    set_threads(threads)
    splits, built = sib200_e5(data_path, languages, per_language, test_per_language, seed)
    model = built.model.to(getattr(torch, dtype))
    examples = TokenizedExamples(splits.train, built.tokenizer, max_length)
    batches = epoch_batches(examples, batch_size, epochs, seed)
    rates = learning_rates(len(batches), learning_rate, warmup_ratio=0.1)
    states = _rng_states(seed, len(batches))
    test = splits.test[splits.test[schema.LANGUAGE] == output_language].reset_index(drop=True)
    test_batches = list(make_loader(TokenizedExamples(test, built.tokenizer, max_length), 16))
    output = mg.test_loss_output(model, test_batches)
    n_train = len(splits.train)
    n_params = sum(p.numel() for p in model.parameters())

    start = time.perf_counter()
    with torch.no_grad():
        ones = torch.ones(n_train, dtype=model.dtype)
        base = float(output(mg.train(model, batches, rates, ones, rng_states=states)))
    seconds_training = time.perf_counter() - start
    start = time.perf_counter()
    gradient = mg.data_weight_gradient(
        model, batches, rates, n_train, output, segment=segment, rng_states=states
    )
    seconds_metagradient = time.perf_counter() - start
    report = {
        "rows": n_train, "steps": len(batches), "segment": segment, "dtype": dtype,
        "parameters": n_params, "output": f"mean test loss of {output_language}",
        "output_value": base, "seconds_training": round(seconds_training, 1),
        "seconds_metagradient": round(seconds_metagradient, 1),
        "ratio_to_training": round(seconds_metagradient / seconds_training, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 2),
        "gradient_abs_max": float(gradient.abs().max()),
    }  # fmt: skip
    if check:
        order = torch.argsort(gradient.abs(), descending=True)
        rows = order[:check].tolist()  # the rows the output depends on most
        errors, checked = [], []
        for i in rows:
            moved = []
            for sign in (1, -1):
                weights = torch.ones(n_train, dtype=model.dtype)
                weights[i] += sign * h
                with torch.no_grad():
                    final = mg.train(model, batches, rates, weights, rng_states=states)
                    moved.append(float(output(final)))
            numeric = (moved[0] - moved[1]) / (2 * h)
            errors.append(abs(float(gradient[i]) - numeric) / abs(numeric))
            language = splits.train[schema.LANGUAGE][i]
            checked.append({"row": i, "language": language, "metagradient": float(gradient[i]),
                            "finite_difference": numeric})  # fmt: skip
        report |= {"checked": checked, "max_relative_error": max(errors), "h": h}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
