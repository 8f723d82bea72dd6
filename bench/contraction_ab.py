"""Train rows per contraction (`engine.row_blocks`), alternating on one process: the same
test cache and the same forward batches scored with each `--rows` setting in turn, so a
slow spell of the machine hits every setting alike. Prints each repeat's seconds, the
ratio of every setting to the first one within a repeat (paired), and the largest
difference between their scores.

    python bench/contraction_ab.py --per-language 100 --rows 32 128 256 --repeat 3

--split-groups adds, at the first --rows, the engine before 1c793af: one product per test
length group instead of one over all the groups formed together.

    python bench/contraction_ab.py --per-language 100 --rows 128 --split-groups --repeat 4

--reform adds, at the first --rows, test_gradients="reform": the test side held as its
tokens' factors and its gradients formed again for every block (its own test cache, built
once like the kept one, which forms its gradients at the first block of the first repeat).

    python bench/contraction_ab.py --per-language 100 --rows 128 --reform --repeat 4
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch
from tracin_setup import SIB200, _tokenized, pad_batches, sib200_e5

from xlinfluence.tracin.engine import CheckpointScorer, block_index, row_blocks
from xlinfluence.tracin.linear import LinearKernel

SPLIT = "split"  # the setting with one product per length group
REFORM = "reform"  # the setting that forms the test gradients again per block


def _per_group(segments, start):
    """LinearKernel._test_grads cut back into one (index, grads) piece per length group."""
    pieces = []
    for seg in segments:
        for i in range(max(start, seg["from"]), seg["to"]):
            lo, hi = seg["offsets"][i - seg["from"]], seg["offsets"][i - seg["from"] + 1]
            pieces.append((seg["index"][lo:hi], seg["grads"][lo:hi]))
    return pieces


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", default=SIB200)
    p.add_argument("--languages", default="en,de,fr,ru,zh")
    p.add_argument("--per-language", type=int, default=100, help="train rows per language")
    p.add_argument("--test-per-language", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=32, help="forward batch (influence's)")
    p.add_argument("--rows", type=int, nargs="+", default=[32, 128, 256])
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--split-groups", action="store_true",
                   help="also one product per test length group, at the first --rows")  # fmt: skip
    p.add_argument("--reform", action="store_true",
                   help='also test_gradients="reform", at the first --rows')  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits, built = sib200_e5(str(args.data_path), args.languages, args.per_language,
                              args.test_per_language, args.seed)  # fmt: skip
    train, test = _tokenized(splits.train, args), _tokenized(splits.test, args)
    train_batches = pad_batches(train, args.batch_size, bucket=True)
    print(f"{len(train)} train x {len(test)} test, forward batch {args.batch_size}, "
          f"{args.threads} threads")  # fmt: skip
    settings: list[int | str] = list(args.rows) + ([SPLIT] if args.split_groups else [])
    settings += [REFORM] if args.reform else []
    seconds: dict[int | str, list[float]] = {s: [] for s in settings}
    scores: dict[int | str, torch.Tensor] = {}
    kept = CheckpointScorer(built.model)
    reform = CheckpointScorer(built.model, test_gradients=REFORM)
    caches = {}
    for scorer in (kept, reform) if args.reform else (kept,):
        with scorer:
            caches[scorer] = scorer.test_cache(pad_batches(test, args.batch_size, bucket=True))
    for rep in range(args.repeat):
        order = settings[rep % len(settings) :] + settings[: rep % len(settings)]
        for setting in order:
            rows = args.rows[0] if setting in (SPLIT, REFORM) else setting
            scorer = reform if setting == REFORM else kept
            cache = caches[scorer]
            patch = mock.patch.object(LinearKernel, "_test_grads", staticmethod(_per_group))
            out = torch.zeros(len(test), len(train))
            with scorer, patch if setting == SPLIT else contextlib.nullcontext():
                started = time.perf_counter()
                for block in row_blocks(train_batches, rows):
                    part, _ = scorer.train_block(block, cache)
                    index = block_index(block)
                    out[cache.index.unsqueeze(1), index.unsqueeze(0)] = part.T
                seconds[setting].append(time.perf_counter() - started)
            scores.setdefault(setting, out)
        print(f"repeat {rep}: " + ", ".join(f"{_label(s, args)} {seconds[s][-1]:.1f} s"
                                            for s in order), flush=True)  # fmt: skip
    base = settings[0]
    reference = scores[base]
    for setting in settings:
        ratios = [s / b for s, b in zip(seconds[setting], seconds[base], strict=True)]
        diff = ((scores[setting] - reference).abs().max() / reference.abs().max()).item()
        print(f"{_label(setting, args)}: median {statistics.median(seconds[setting]):.1f} s, "
              f"x {_label(base, args)} paired {min(ratios):.3f}-{max(ratios):.3f} "
              f"(median {statistics.median(ratios):.3f}), max rel diff {diff:.1e}")  # fmt: skip


def _label(setting: int | str, args: argparse.Namespace) -> str:
    if setting == SPLIT:
        return f"{args.rows[0]} rows, one product per length group"
    if setting == REFORM:
        return f"{args.rows[0]} rows, test gradients re-formed per block"
    return f"{setting} rows"


if __name__ == "__main__":
    main()
