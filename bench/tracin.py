#!/usr/bin/env python
"""TracIn benchmark: xlinfluence against Captum TracInCP, a per-example loop and training.

TracInCP (Pruthi et al. 2020): score(z, z') = sum_c lr_c <grad L(z; theta_c), grad L(z'; theta_c)>.
Every method sees the same XLM-R-shaped model (random init), the same synthetic padded data
and the same safetensors checkpoints with their learning rates; each is checked against a
float64 per-example reference on the parameters it covers. Each method runs in its own
worker process (this script, with --worker), so its peak RSS is its own and no method
inherits another's warm caches; timings exclude process start and set-up.

    python bench/tracin.py                 # default CPU size
    python bench/tracin.py --device cuda --precision bf16 --hidden 768 --layers 12 \\
        --max-len 128 --skip-peers         # XLM-R-base-sized throughput on one GPU

See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file, save_file
from tracin_methods import BY_NAME, METHODS, RUNNERS, Clock, Context, warm_up
from tracin_setup import (
    SIB200,
    build_model,
    datasets,
    group_size,
    make_checkpoints,
    pad_batches,
    param_groups,
    read_checkpoints,
)

from xlinfluence.tracin import engine

TARGETS = {  # the project's speed goals, checked and printed
    "captum_all": 20.0,  # xlinfluence at least 20x faster than Captum over all parameters
    "captum_samplewise": 2.0,  # at least 2x faster than Captum's sample-wise Linear-only mode
    "dattri": 2.0,  # at least 2x faster than dattri-llm's exact mode on the same layers
    "train_epoch": 1.5,  # at most 1.5x one training epoch per checkpoint (synthetic)
    "train_epoch_real": 0.75,  # at most 0.75x a shuffled epoch on e5-small + SIB-200
    "train_step": 1.10,  # the train step within 10% of the plain loop on the same batches
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    scale = p.add_argument_group("scale")
    scale.add_argument("--n-train", type=int, default=512, help="training examples")
    scale.add_argument("--n-test", type=int, default=32, help="test examples")
    scale.add_argument(
        "--min-len", type=int, default=16, help="shortest example, <s> and </s> included"
    )
    scale.add_argument(
        "--max-len",
        type=int,
        help="longest example, <s> and </s> included (default: 64 synthetic; e5-sib200 "
        "truncates at 128, the pipeline's max_length)",
    )
    scale.add_argument("--checkpoints", type=int, default=2, help="checkpoints to sum over")
    scale.add_argument(
        "--steps-per-checkpoint", type=int, default=4, help="AdamW steps between saves"
    )
    scale.add_argument("--batch-size", type=int, default=32, help="batch size of every method")
    scale.add_argument(
        "--influence-batch-size",
        type=int,
        default=None,
        help="xlinfluence's (and the floor's) train and test batches, as the influence step's "
        "batch_size (default: --batch-size); larger batches make the pairwise products "
        "bigger matrix products",
    )
    scale.add_argument(
        "--test-chunk-size",
        type=int,
        default=None,
        help="xlinfluence's test chunk (default: the whole test set at once); 0 sizes it as "
        "the influence step's default does (tracin.memory.auto_test_chunk: 30%% of the "
        "device's memory, at most 3 GiB on the CPU), to show what that cap costs",
    )
    scale.add_argument(
        "--contraction-rows",
        type=int,
        default=engine.CONTRACTION_ROWS,
        help="train rows xlinfluence contracts with the test side at once "
        f"(default: the engine's, {engine.CONTRACTION_ROWS}); its forward batches stay "
        "--influence-batch-size",
    )
    scale.add_argument(
        "--captum-n-train",
        type=int,
        default=None,
        help="score only this many (seeded random) train examples with Captum; "
        "its time is then reported per (train x test) pair (default: all)",
    )
    scale.add_argument(
        "--reference-n-train",
        type=int,
        default=None,
        help="score only this many (seeded random) train examples with the per-example loops; "
        "errors are then measured on those columns (default: all)",
    )
    scale.add_argument(
        "--peer-n-test",
        type=int,
        default=None,
        help="Captum, the autograd loop and the float64 reference score only this many "
        "(seeded random) test examples; Captum and the autograd loop time their parts and "
        "report their estimated time on the whole set. Give whole batches (a multiple of the "
        "influence batch size; --captum-n-train of --batch-size): Captum's per-example "
        "backward walks its whole batch, so a short batch makes it look faster (default: all)",
    )
    scale.add_argument(
        "--reference-chunk",
        type=int,
        default=256,
        help="train examples per reference chunk (bounds its examples x params matrix)",
    )
    memory = p.add_argument_group("memory against N (top-k streamed vs the full matrix)")
    memory.add_argument(
        "--memory-n",
        type=int,
        nargs="+",
        help="also score the first checkpoint at these train set sizes, once keeping only "
        "the streamed top-k and once the full (M, N) matrix, and compare peak memory",
    )
    memory.add_argument("--memory-n-test", type=int, default=512, help="M for --memory-n")
    memory.add_argument(
        "--memory-params",
        default="classifier",
        help="xlinfluence `params` for --memory-n (a cheap subset: memory is about scores)",
    )
    memory.add_argument("--top-k", type=int, default=10, help="k for --memory-n")
    real = p.add_argument_group("the e5-sib200 setting (--model e5-sib200)")
    real.add_argument(
        "--model",
        choices=("synthetic", "e5-sib200"),
        default="synthetic",
        help="synthetic: XLM-R shape, random init, random tokens (the options below); "
        "e5-sib200: the pipeline's e5-small on real SIB-200 rows (n-train and n-test follow "
        "from the languages and counts; --max-len truncates)",
    )
    real.add_argument("--data-path", type=Path, default=SIB200, help="SIB-200's annotated/ folder")
    real.add_argument("--languages", default="en,de,fr,ru,zh", help="comma-separated")
    real.add_argument("--per-language", type=int, default=200, help="training rows per language")
    real.add_argument("--test-per-language", type=int, default=25, help="test rows per language")
    model = p.add_argument_group("model (XLM-R shape, random init)")
    model.add_argument("--hidden", type=int, default=128, help="hidden size (128: the tiny preset)")
    model.add_argument("--layers", type=int, default=4, help="encoder layers (4: the tiny preset)")
    model.add_argument("--vocab", type=int, default=4000, help="vocabulary size")
    model.add_argument("--num-labels", type=int, default=3, help="classes")
    model.add_argument(
        "--lr",
        type=float,
        help="AdamW lr for checkpoints and the epoch (default: 5e-4 synthetic, 2e-5 e5-sib200)",
    )
    run = p.add_argument_group("run")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: the model's forward under autocast (fp32 weights) for xlinfluence and "
        "training; Captum and the reference always run in fp32",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads in every worker; 1 by default because several "
        "OpenMP threads slow down many-fold when other processes share the cores",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each method this many times in its worker and keep the fastest "
        "(the per-example references run once)",
    )
    run.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each method, wait up to this many seconds for the machine to go idle",
    )
    run.add_argument(
        "--skip-peers",
        action="store_true",
        help="run only xlinfluence and the training epochs (no Captum, no reference)",
    )
    run.add_argument(
        "--only", nargs="+", choices=[m.name for m in METHODS], help="run only these methods"
    )
    run.add_argument(
        "--profile",
        action="store_true",
        help="also profile xlinfluence: time per engine part and top torch ops",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run methods in this process (peak RSS then only a lower bound)",
    )
    run.add_argument(
        "--workdir",
        type=Path,
        help="keep checkpoints and raw scores here (a temp dir when not given)",
    )
    run.add_argument(
        "--out", type=Path, default=Path("bench/results/tracin.json"), help="JSON results"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.max_len is None:
        args.max_len = 128 if args.model == "e5-sib200" else 64
    if args.lr is None:
        args.lr = 2e-5 if args.model == "e5-sib200" else 5e-4
    if args.model == "e5-sib200":
        if not args.data_path.exists():
            p.error(f"no SIB-200 data at {args.data_path}; pass --data-path")
        n_langs = len(args.languages.split(","))
        args.n_train = args.per_language * n_langs
        args.n_test = args.test_per_language * n_langs
        args.num_labels = 7  # SIB-200's topics
    if args.memory_n is not None and len(set(args.memory_n)) < 2:
        p.error("--memory-n needs at least two different train set sizes to compare")
    if not 2 <= args.min_len <= args.max_len:
        p.error("need 2 <= --min-len <= --max-len (<s> and </s> are counted)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no GPU")
    return args


def engine_source_hash() -> str:
    """sha256 of xlinfluence.tracin's source, so a run can tell if it changed between workers."""
    import hashlib

    import xlinfluence.tracin

    digest = hashlib.sha256()
    for path in sorted(Path(xlinfluence.tracin.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> dict:
    """Commit and whether the working tree differs from it (read-only git calls)."""

    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD"),
        "src_modified": bool(status) if status is not None else None,
    }


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: clear_refs 5), so the peak read after a method
    is that method's, not set-up's. False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak RSS since start or the last reset_peak_rss (VmHWM), else getrusage's maximum."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace, name: str) -> dict:
    """Run one method in this process; save its scores; return its measurements."""
    warnings.filterwarnings("ignore")  # Captum warns that integer inputs take no gradient
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train, test = datasets(args)
    model = build_model(args).to(device)
    influence_batch = args.influence_batch_size or args.batch_size
    ctx = Context(
        args=args,
        model=model,
        checkpoints=read_checkpoints(args.workdir),
        train=train,
        test=test,
        train_batches=pad_batches(train, influence_batch, bucket=True),
        test_batches=pad_batches(test, influence_batch, bucket=True),
        groups=param_groups(model),
        clock=Clock(device),
    )
    warm_up(ctx)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peak_reset = reset_peak_rss()
    rss_before = rss_mb()
    if name == "profile":
        from tracin_profile import profile_xlinfluence

        return {"profile": profile_xlinfluence(ctx), "engine_hash": engine_source_hash()}
    method = BY_NAME[name]
    runs = []
    for _ in range(1 if method.kind in ("reference", "autograd") else args.repeat):
        ctx.clock = Clock(device)
        runs.append((RUNNERS[method.kind](ctx, method), ctx.clock))
    found, fastest = min(runs, key=lambda run: run[1].seconds)
    rows = list(range(ctx.n_test)) if found.rows is None else found.rows
    if found.scores is not None:
        save_file(
            {"scores": found.scores, "cols": torch.tensor(found.cols), "rows": torch.tensor(rows)},
            str(args.workdir / f"{name}.safetensors"),
        )
    return {
        "seconds": fastest.seconds,
        "all_seconds": [clock.seconds for _, clock in runs],
        "full_seconds": found.full_seconds,
        "parts": found.parts,
        "other_cpu_s": fastest.other_cpu_s,
        "engine_hash": engine_source_hash(),
        "n_train_used": len(found.cols),
        "n_test_used": len(rows),
        "params": group_size(model, ctx.groups[method.group]),
        "peak_rss_mb": peak_rss_mb(),
        "peak_reset": peak_reset,
        "rss_before_mb": rss_before,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }


def wait_for_idle(limit_s: float, busy: float = 0.15) -> None:
    """Wait (at most limit_s) until other processes use under `busy` of the cores for 2 s."""
    waited = 0.0
    while waited < limit_s and psutil.cpu_percent(interval=2.0) / 100 > busy:
        waited += 2.0
    if waited:
        print(
            f"[tracin bench]   waited {waited:.0f} s for an idle machine",
            file=sys.stderr,
            flush=True,
        )


def run_method(args: argparse.Namespace, name: str, extra: tuple[str, ...] = ()) -> dict:
    """`extra` arguments override the command line's in the worker (e.g. another --n-train)."""
    wait_for_idle(args.wait_idle)
    if args.in_process:
        overrides = vars(parse_args([*sys.argv[1:], *extra])) if extra else {}
        changed = {k: v for k, v in overrides.items() if k != "workdir"}
        return worker(argparse.Namespace(**{**vars(args), **changed}), name)
    argv = [a for a in sys.argv[1:] if a != "--in-process"]
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        *argv,
        *extra,
        "--workdir",
        str(args.workdir),
        "--worker",
        name,
    ]
    subprocess.run(cmd, check=True)
    return json.loads((args.workdir / f"{name}.json").read_text())


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


def max_rel_err_shared(found: dict, truth: dict) -> float | None:
    """max_rel_err on the test rows and train columns both score (either may cover a seeded
    subset of each)."""

    def where(d: dict, key: str, shared: list[int]) -> list[int]:
        at = {c: k for k, c in enumerate(d[key].tolist())}
        return [at[c] for c in shared]

    common = {
        key: sorted(set(found[key].tolist()) & set(truth[key].tolist())) for key in ("rows", "cols")
    }
    if not all(common.values()):
        return None

    def pick(d: dict) -> torch.Tensor:
        return d["scores"][where(d, "rows", common["rows"])][:, where(d, "cols", common["cols"])]

    return max_rel_err(pick(found), pick(truth))


def report(args: argparse.Namespace, runs: dict[str, dict], n_ckpt: int) -> list[dict]:
    """Table rows: time, ratios, memory, error against the float64 reference of the same params."""
    truth = {}
    for group, name in (
        ("all", "reference_fp64"),
        ("linear", "reference_fp64_linear"),
        ("embeddings", "reference_fp64_embeddings"),
    ):
        if name in runs:
            truth[group] = load_file(str(args.workdir / f"{name}.safetensors"))
    epoch = runs.get("train_epoch", {}).get("seconds")
    per_pair = {}  # xlinfluence seconds per checkpoint per pair, by group
    rows = []
    for m in METHODS:
        if m.name not in runs:
            continue
        r = runs[m.name]
        n_used, m_used = r["n_train_used"], r["n_test_used"]
        s_ckpt = r["seconds"] / (1 if m.kind == "train" else n_ckpt)
        # seconds per checkpoint on the whole set: a peer's estimate from its timed parts,
        # else linear in the pairs it covered
        full_ckpt = (
            r["full_seconds"] / n_ckpt
            if r["full_seconds"] is not None
            else s_ckpt * (args.n_train * args.n_test) / (n_used * m_used)
        )
        row = {
            "method": m.name,
            "label": m.label,
            "table": m.row,
            "group": m.group,
            "params": r["params"],
            "n_train_used": n_used,
            "n_test_used": m_used,
            "n_test": args.n_test,
            "parts": r["parts"],
            "checkpoints": n_ckpt,
            "seconds": round(r["seconds"], 3),
            "all_seconds": [round(t, 3) for t in r["all_seconds"]],
            "seconds_per_checkpoint": round(s_ckpt, 3),
            "train_examples_per_s": round(n_used / s_ckpt, 1),
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "rss_over_setup_mb": round(r["peak_rss_mb"] - r["rss_before_mb"], 1),
            "peak_gpu_mb": r["peak_gpu_mb"] and round(r["peak_gpu_mb"], 1),
            # share of the machine's cores other processes used while this was timed
            "other_load": round(r["other_cpu_s"] / (r["seconds"] * (os.cpu_count() or 1)), 3),
        }
        if m.kind != "train":
            row["full_seconds_per_checkpoint"] = round(full_ckpt, 3)
            row["scaled"] = (n_used, m_used) != (args.n_train, args.n_test)
            pairs = args.n_train * args.n_test
            row["us_per_pair_per_checkpoint"] = round(1e6 * full_ckpt / pairs, 3)
            if m.kind == "xlinfluence":
                per_pair[m.group] = row["us_per_pair_per_checkpoint"]
            if m.group in per_pair:
                row["x_xlinfluence"] = round(
                    row["us_per_pair_per_checkpoint"] / per_pair[m.group], 2
                )
            if epoch:
                row["x_train_epoch"] = round(full_ckpt / epoch, 2)
            found = args.workdir / f"{m.name}.safetensors"
            if m.group in truth and found.exists():  # the floor computes no scores
                row["max_rel_err"] = max_rel_err_shared(load_file(str(found)), truth[m.group])
        elif epoch:
            row["x_train_epoch"] = round(r["seconds"] / epoch, 2)
        rows.append(row)
    return rows


HEAD = (
    "method", "params", "N x M used", "s", "s/ckpt", "s/ckpt all", "us/pair/ckpt",
    "x xlinf.", "x epoch", "peak MB", "+MB", "max rel err", "other load",
)  # fmt: skip
LEGEND = (
    "s, s/ckpt: measured on the N x M (train x test) examples used. s/ckpt all: on the whole "
    "set; * where a peer ran on subsets: Captum and the autograd loop from their timed parts "
    "(test side x M, per-train-example work x N, pairwise products x N x M), others linear in "
    "the pairs. us/pair/ckpt, x xlinf. (over xlinfluence on the same parameters) and x epoch "
    "(over one shuffled training epoch) use s/ckpt all. peak MB: worker's peak RSS while the "
    "method ran (VmHWM, reset after set-up; GPU: peak allocated); +MB: that peak over the RSS "
    "after set-up. max rel err: max|a-b|/max|b| against the float64 reference on the same "
    "parameters, on the rows and columns both cover. other load: share of all cores other "
    "processes used meanwhile."
)


def _cells(r: dict) -> tuple[str, ...]:
    def num(key: str, spec: str) -> str:
        return format(r[key], spec) if r.get(key) is not None else "-"

    star = "*" if r.get("scaled") else ""
    return (
        r["label"],
        f"{r['group']} {r['params'] / 1e6:.2f}M",
        f"{r['n_train_used']} x {r['n_test_used']}",
        num("seconds", ".2f"),
        num("seconds_per_checkpoint", ".2f"),
        num("full_seconds_per_checkpoint", ".2f") + star,
        num("us_per_pair_per_checkpoint", ".2f") + star,
        num("x_xlinfluence", ".2f") + (star if "x_xlinfluence" in r else ""),
        num("x_train_epoch", ".2f") + (star if "x_train_epoch" in r else ""),
        f"{r['peak_gpu_mb'] or r['peak_rss_mb']:.0f}",
        num("rss_over_setup_mb", ".0f"),
        num("max_rel_err", ".1e"),
        f"{100 * r['other_load']:.0f}%",
    )


def aligned(head: tuple[str, ...], lines: list[tuple[str, ...]]) -> list[str]:
    """A text table: header, rule, rows; first column left-aligned, the others right."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        for cells in [head, tuple("-" * w for w in widths), *lines]
    ]


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    if args.model == "e5-sib200":
        data = (
            f"e5-small on SIB-200 ({args.languages}), {args.n_train} train x {args.n_test} "
            f"test, truncated at {args.max_len} tokens"
        )
    else:
        data = (
            f"{args.n_train} train x {args.n_test} test, lengths {args.min_len}..{args.max_len}"
            f", hidden {args.hidden}, {args.layers} layers"
        )
    setting = (
        f"{data}, batch {args.batch_size} "
        f"(influence {args.influence_batch_size or args.batch_size}, contracted "
        f"{args.contraction_rows} rows at a time"
        + ("" if args.test_chunk_size is None else f", test chunk {args.test_chunk_size or 'auto'}")
        + ")"
        f", {args.checkpoints} checkpoints, {args.device} "
        f"{args.precision}, {args.threads} thread(s), fastest of {args.repeat}."
    )
    return "\n".join([*aligned(HEAD, [_cells(r) for r in rows if r["table"]]), setting, LEGEND])


def verdict(rows: list[dict], args: argparse.Namespace) -> list[str]:
    by = {r["method"]: r for r in rows}
    lines = []
    epoch_target = TARGETS["train_epoch_real" if args.model == "e5-sib200" else "train_epoch"]
    checks = (
        ("captum", "x_xlinfluence", ">=", TARGETS["captum_all"], "Captum all-params / xlinfluence"),
        (
            "captum_samplewise",
            "x_xlinfluence",
            ">=",
            TARGETS["captum_samplewise"],
            "Captum sample-wise Linear / xlinfluence Linear",
        ),
        (
            "dattri_llm",
            "x_xlinfluence",
            ">=",
            TARGETS["dattri"],
            "dattri-llm exact / xlinfluence, same layers",
        ),
        (
            "xlinfluence",
            "x_train_epoch",
            "<=",
            epoch_target,
            "xlinfluence per checkpoint / training epoch",
        ),
        ("train_step", "x_train_epoch", "<=", TARGETS["train_step"], "train step / plain loop"),
    )
    for name, key, op, target, what in checks:
        if key not in by.get(name, {}):
            continue
        value = by[name][key]
        ok = value >= target if op == ">=" else value <= target
        lines.append(f"{'MET ' if ok else 'MISSED'}  {what} = {value:.2f} (target {op} {target})")
    return lines


def memory_scaling(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Peak RSS over set-up at each --memory-n, top-k streamed and full matrix; the check."""
    rows = []
    for n in sorted(args.memory_n):
        for name in ("memory_topk", "memory_full"):
            print(f"[tracin bench] {BY_NAME[name].label}, N={n} ...", file=sys.stderr, flush=True)
            extra = ("--n-train", str(n), "--n-test", str(args.memory_n_test))
            r = run_method(args, name, extra)
            rows.append(
                {
                    "method": name,
                    "n_train": n,
                    "n_test": args.memory_n_test,
                    "seconds": round(r["seconds"], 3),
                    "peak_rss_mb": round(r["peak_rss_mb"], 1),
                    "rss_over_setup_mb": round(r["peak_rss_mb"] - r["rss_before_mb"], 1),
                    "matrix_mb": round(4 * args.memory_n_test * n / 2**20, 1),
                    "engine_hash": r["engine_hash"],
                }
            )
    growth = {}
    for name in ("memory_topk", "memory_full"):
        mine = [r for r in rows if r["method"] == name]
        growth[name] = mine[-1]["rss_over_setup_mb"] - mine[0]["rss_over_setup_mb"]
    matrix_growth = rows[-1]["matrix_mb"] - rows[0]["matrix_mb"]
    ok = growth["memory_topk"] <= 0.1 * matrix_growth
    check = (
        f"{'MET ' if ok else 'MISSED'}  top-k memory growth N={rows[0]['n_train']}.."
        f"{rows[-1]['n_train']} = {growth['memory_topk']:+.1f} MB (full matrix: "
        f"{growth['memory_full']:+.1f} MB, M x N x 4 B: {matrix_growth:+.1f} MB; target <= 10% "
        "of the matrix growth)"
    )
    return rows, [check]


def format_memory(rows: list[dict]) -> str:
    head = ("memory", "N", "M", "s", "peak MB", "+MB over set-up", "M x N matrix MB")
    lines = [
        (BY_NAME[r["method"]].label, str(r["n_train"]), str(r["n_test"]), f"{r['seconds']:.1f}",
         f"{r['peak_rss_mb']:.0f}", f"{r['rss_over_setup_mb']:.1f}", f"{r['matrix_mb']:.1f}")
        for r in rows
    ]  # fmt: skip
    return "\n".join(aligned(head, lines))


def run_all(args: argparse.Namespace) -> dict:
    """Checkpoints, then every selected method in its worker, the table and the checks."""
    checkpoints = make_checkpoints(args, args.workdir)
    names = [m.name for m in METHODS if m.kind != "memory" and not (args.skip_peers and m.peer)]
    names = [n for n in names if not args.only or n in args.only]
    if args.model != "e5-sib200":
        names = [n for n in names if n != "train_step"]
    runs, failed = {}, {}
    for name in names:
        print(f"[tracin bench] {BY_NAME[name].label} ...", file=sys.stderr, flush=True)
        try:
            runs[name] = run_method(args, name)
        except subprocess.CalledProcessError as err:  # one failed peer does not lose the rest
            failed[name] = str(err)
            print(f"[tracin bench]   FAILED: {err}", file=sys.stderr, flush=True)
            continue
        print(f"[tracin bench]   {runs[name]['seconds']:.2f} s", file=sys.stderr, flush=True)
    rows = report(args, runs, len(checkpoints))
    result = {
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "workdir")
        },
        "checkpoint_lrs": [lr for _, lr in checkpoints],
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "captum": _version("captum"),
            "dattri-llm": _version("dattri-llm"),
            "transformers": _version("transformers"),
            **git_state(),
        },
        "rows": rows,
        "failed": failed,
        "checks": verdict(rows, args),
        "table": format_table(rows, args),
        "profile": None,
        "memory": None,
    }
    print(result["table"])
    print("\n".join(result["checks"]))
    hashes = {r["engine_hash"] for r in runs.values()}
    if args.memory_n:
        memory_rows, memory_check = memory_scaling(args)
        result["memory"] = memory_rows
        result["checks"] += memory_check
        hashes |= {r["engine_hash"] for r in memory_rows}
        print(format_memory(memory_rows))
        print("\n".join(memory_check))
    if args.profile:
        from tracin_profile import format_profile

        try:
            found = run_method(args, "profile")
        except subprocess.CalledProcessError as err:
            print(f"[tracin bench] profile failed: {err}", file=sys.stderr)
        else:
            result["profile"] = found["profile"]
            hashes.add(found["engine_hash"])
            print(format_profile(found["profile"]))
    result["environment"]["tracin_source_sha256"] = sorted(hashes)
    if len(hashes) > 1:
        print(
            "WARNING: xlinfluence.tracin's source changed between workers; the rows may not "
            "measure the same engine. Run again.",
            file=sys.stderr,
        )
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        result = worker(args, args.worker)
        (args.workdir / f"{args.worker}.json").write_text(json.dumps(result))
        return
    torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tracin-bench-"))
            args.workdir = Path(tmp)
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run_all(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
