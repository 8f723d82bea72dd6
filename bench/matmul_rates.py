#!/usr/bin/env python
"""The arithmetic bound of exact TracIn on this machine: GFLOP/s of its two big products,
alone, at e5-small's Linear shapes.

Per train block of `--rows` examples and Linear layer (d_in -> d_out), the engine forms each
example's weight gradient (a bmm over its T tokens, 2 T d_in d_out flop) and contracts the
block with the M cached test gradients (one mm, 2 rows M d_in d_out flop). bench/README.md
divides the whole set's flop count by these rates to get the least time any exact
formed-gradient method can take here, whatever its engineering.

    python bench/matmul_rates.py                 # e5-small: 384->384, 384->1536, 1536->384
    python bench/matmul_rates.py --bf16          # also the contraction on bf16 units

`--bf16` asks whether a CPU's bf16 matrix units (AMX on recent Xeons) could run the
contraction exactly. PyTorch's CPU matmul returns bf16 from bf16 operands, so the one fp32
-output bf16 path is oneDNN's fp32 matmul with bf16 math (`torch.backends.mkldnn.matmul.
fp32_precision = "bf16"`). It times that path in one pass, and as the three-pass split
(x = hi + lo, each exact in bf16; hi hi' + hi lo' + lo hi' as one product over 3 K) that
brings the error near fp32's, and prints each one's max|err| / max|exact| against float64.
"""

from __future__ import annotations

import argparse
import contextlib
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


@contextlib.contextmanager
def bf16_math():
    """fp32 matmuls on oneDNN's bf16 math (fp32 in and out, bf16 products), then restore."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


def bf16_rows(train: torch.Tensor, test: torch.Tensor, flop: float, repeat: int) -> list:
    """(GFLOP/s per exact flop, max rel err) of the contraction on bf16 math: one pass, and
    the three-pass split; then fp32's error, beside the rate the table already has."""
    exact = train.double() @ test.double().T
    scale = exact.abs().max()

    def err(result: torch.Tensor) -> float:
        return float((result.double() - exact).abs().max() / scale)

    def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hi = x.bfloat16().float()
        return hi, (x - hi).bfloat16().float()

    (w_hi, w_lo), (x_hi, x_lo) = halves(train), halves(test)
    split_w = torch.cat([w_hi, w_hi, w_lo], 1)
    split_x = torch.cat([x_hi, x_lo, x_hi], 1)
    with bf16_math():
        out = [
            (rate(lambda: train @ test.T, flop, repeat), err(train @ test.T)),
            (rate(lambda: split_w @ split_x.T, flop, repeat), err(split_w @ split_x.T)),
        ]
    return [*out, err(train @ test.T)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["384x384", "384x1536", "1536x384"])
    p.add_argument("--rows", type=int, default=128, help="train rows contracted at once")
    p.add_argument("--batch", type=int, default=32, help="examples per forming bmm")
    p.add_argument("--tokens", type=int, default=40, help="live tokens per train example")
    p.add_argument("--n-test", type=int, default=125, help="cached test gradients (M)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5, help="fastest of")
    p.add_argument("--bf16", action="store_true", help="also the contraction on bf16 units")
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
        if args.bf16:
            flop = 2 * args.rows * args.n_test * d_in * d_out
            one_pass, split, fp32_error = bf16_rows(train, test, flop, args.repeat)
            rows = (("fp32", (contract, fp32_error)), ("bf16 one pass", one_pass),
                    ("bf16 three-pass split", split))  # fmt: skip
            for name, (speed, error) in rows:
                print(f"{'':>12}  contract, {name}: {speed:.1f} GFLOP/s, max rel err {error:.1e}")
    if args.bf16:
        amx = torch.cpu._is_amx_tile_supported()
        print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, AMX tiles: {amx}")


if __name__ == "__main__":
    main()
