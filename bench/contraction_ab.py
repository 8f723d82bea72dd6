"""Train rows per contraction (`engine.row_blocks`), alternating on one process: the same
test cache and the same forward batches scored with each `--rows` setting in turn, so a
slow spell of the machine hits every setting alike. Prints each repeat's seconds, the
ratio of every setting to the first one within a repeat (paired), and the largest
difference between their scores.

    python bench/contraction_ab.py --per-language 100 --rows 32 128 256 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tracin_setup import SIB200, _tokenized, pad_batches, sib200_e5

from xlinfluence.tracin.engine import CheckpointScorer, block_index, row_blocks


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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits, built = sib200_e5(str(args.data_path), args.languages, args.per_language,
                              args.test_per_language, args.seed)  # fmt: skip
    train, test = _tokenized(splits.train, args), _tokenized(splits.test, args)
    train_batches = pad_batches(train, args.batch_size, bucket=True)
    print(f"{len(train)} train x {len(test)} test, forward batch {args.batch_size}, "
          f"{args.threads} threads")  # fmt: skip
    seconds: dict[int, list[float]] = {rows: [] for rows in args.rows}
    scores: dict[int, torch.Tensor] = {}
    with CheckpointScorer(built.model) as scorer:
        cache = scorer.test_cache(pad_batches(test, args.batch_size, bucket=True))
        for rep in range(args.repeat):
            order = args.rows[rep % len(args.rows) :] + args.rows[: rep % len(args.rows)]
            for rows in order:
                out = torch.zeros(len(test), len(train))
                started = time.perf_counter()
                for block in row_blocks(train_batches, rows):
                    part, _ = scorer.train_block(block, cache)
                    index = block_index(block)
                    out[cache.index.unsqueeze(1), index.unsqueeze(0)] = part.T
                seconds[rows].append(time.perf_counter() - started)
                scores.setdefault(rows, out)
            print(f"repeat {rep}: " + ", ".join(f"{r} rows {seconds[r][-1]:.1f} s" for r in order),
                  flush=True)  # fmt: skip
    base = args.rows[0]
    reference = scores[base]
    for rows in args.rows:
        ratios = [s / b for s, b in zip(seconds[rows], seconds[base], strict=True)]
        diff = ((scores[rows] - reference).abs().max() / reference.abs().max()).item()
        print(f"{rows:4d} rows: median {statistics.median(seconds[rows]):.1f} s, "
              f"x {base} rows paired {min(ratios):.3f}-{max(ratios):.3f} "
              f"(median {statistics.median(ratios):.3f}), max rel diff {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
