#!/usr/bin/env python
"""The arithmetic bound of exact TracIn on this machine: GFLOP/s of its two big products,
alone, at e5-small's Linear shapes.

Per train block of `--rows` examples and Linear layer (d_in -> d_out), the engine forms each
example's weight gradient (a bmm over its T tokens, 2 T d_in d_out flop) and contracts the
block with the M cached test gradients (one mm, 2 rows M d_in d_out flop). bench/README.md
divides the whole set's flop count by these rates to get the least time any exact
formed-gradient method can take here, whatever its engineering.

    python bench/matmul_rates.py                 # e5-small: 384->384, 384->1536, 1536->384
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(fn, flop: float, repeat: int) -> float:
    fn()  # warm: first touch of the output
    best = min(_timed(fn) for _ in range(repeat))
    return flop / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["384x384", "384x1536", "1536x384"])
    p.add_argument("--rows", type=int, default=128, help="train rows contracted at once")
    p.add_argument("--batch", type=int, default=32, help="examples per forming bmm")
    p.add_argument("--tokens", type=int, default=40, help="live tokens per train example")
    p.add_argument("--n-test", type=int, default=125, help="cached test gradients (M)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5, help="fastest of")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"{args.threads} thread(s), fastest of {args.repeat}; GFLOP/s")
    print(f"{'d_in->d_out':>12}  {'form (bmm)':>10}  {'contract (mm)':>13}")
    for shape in args.shapes:
        d_in, d_out = (int(x) for x in shape.split("x"))
        b, t = args.batch, args.tokens
        a = torch.randn(b, t, d_in, generator=gen)
        g = torch.randn(b, t, d_out, generator=gen)
        formed = torch.empty(b, d_out, d_in)
        form = rate(
            lambda: torch.bmm(g.transpose(1, 2), a, out=formed),  # noqa: B023
            2 * b * t * d_in * d_out,
            args.repeat,
        )
        train = torch.randn(args.rows, d_in * d_out, generator=gen)
        test = torch.randn(args.n_test, d_in * d_out, generator=gen)
        contract = rate(
            lambda: train @ test.T,  # noqa: B023
            2 * args.rows * args.n_test * d_in * d_out,
            args.repeat,
        )
        print(f"{shape:>12}  {form:>10.1f}  {contract:>13.1f}")


if __name__ == "__main__":
    main()
