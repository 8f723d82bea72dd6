"""Where first-touch memory goes: how long this machine takes to fill memory it has not
used before (against re-filling memory already touched), and per train batch of the
e5-sib200 setting how long the Linear kernels spend forming per-example gradients
(`LinearKernel._per_example`), the first batch including the test side's lazily formed
gradients. bench/README.md quotes it.

    python bench/formation_probe.py --per-language 20 --gib 8
"""

from __future__ import annotations

import argparse
import time

import torch
from tracin_setup import SIB200, _tokenized, pad_batches, sib200_e5

from xlinfluence.tracin import linear
from xlinfluence.tracin.engine import CheckpointScorer


def first_touch(gib: int) -> None:
    for _ in range(2):
        started = time.perf_counter()
        block = torch.empty(2**28)
        block.fill_(1.0)
        fresh = time.perf_counter() - started
        started = time.perf_counter()
        block.fill_(2.0)
        print(f"1 GiB: first touch {fresh:.2f} s, again {time.perf_counter() - started:.2f} s")
        del block
    started, blocks = time.perf_counter(), []
    for _ in range(gib):
        blocks.append(torch.empty(2**28).fill_(1.0))
    print(f"{gib} GiB kept: first touch {time.perf_counter() - started:.2f} s")


def formation(args: argparse.Namespace) -> None:
    splits, built = sib200_e5(str(args.data_path), args.languages, args.per_language,
                              args.test_per_language, args.seed)  # fmt: skip
    train, test = _tokenized(splits.train, args), _tokenized(splits.test, args)
    spent: list[float] = []
    form = linear.LinearKernel._per_example

    def timed(a, g, out=None):
        started = time.perf_counter()
        grads = form(a, g, out=out)
        spent.append(time.perf_counter() - started)
        return grads

    linear.LinearKernel._per_example = staticmethod(timed)
    with CheckpointScorer(built.model) as scorer:
        started = time.perf_counter()
        cache = scorer.test_cache(pad_batches(test, args.batch_size, bucket=True))
        print(f"test side {time.perf_counter() - started:.2f} s")
        for batch in pad_batches(train, args.batch_size, bucket=True):
            spent.clear()
            started = time.perf_counter()
            scorer.train_block([batch], cache)
            print(f"train batch {tuple(batch['input_ids'].shape)}: "
                  f"{time.perf_counter() - started:.2f} s, forming {sum(spent):.2f} s")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", default=SIB200)
    p.add_argument("--languages", default="en,de,fr,ru,zh")
    p.add_argument("--per-language", type=int, default=20)
    p.add_argument("--test-per-language", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gib", type=int, default=8, help="GiB to fill for the first-touch check")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    first_touch(args.gib)
    formation(args)


if __name__ == "__main__":
    main()
