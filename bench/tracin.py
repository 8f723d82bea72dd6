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
from safetensors.torch import save_file
from tracin_methods import BY_NAME, METHODS, RUNNERS, Clock, Context, warm_up
from tracin_report import (
    format_memory,
    format_paired,
    format_table,
    paired_verdict,
    report,
    verdict,
)
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

#: Method kinds timed in the first round only: the per-example loops, minutes each.
ONCE = ("reference", "autograd")


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
        "the influence step's default does (tracin.memory.plan_test_side: 30%% of the "
        "device's memory, at most 3 GiB on the CPU), to show what that cap costs",
    )
    scale.add_argument(
        "--test-gradients",
        choices=("auto", "keep", "reform"),
        default="auto",
        help="how xlinfluence holds the test side's formed gradients, as the influence "
        "step's test_gradients (default auto: keep them where the chunk fits the cache "
        "budget so, else form them again per block of --contraction-rows)",
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
        "--rounds",
        type=int,
        default=1,
        help="time every method (but the per-example loops) this many times, each in a "
        "fresh worker, reversing the order every other round; the checks are then also "
        "given as ratios paired within rounds, with simultaneous intervals. The table shows "
        "each method's median round",
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
    if args.rounds < 1 or args.repeat < 1:
        p.error("--rounds and --repeat count timings: give 1 or more")
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
    for _ in range(1 if method.kind in ONCE else args.repeat):
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


def time_rounds(args: argparse.Namespace, names: list[str]) -> tuple[list[dict], dict]:
    """Every method in its worker, --rounds times, the order reversed every other round so
    a slow spell of the machine falls on both sides of a ratio. The per-example loops (the
    float64 truth, the autograd loop) run in the first round only."""
    rounds, failed = [], {}
    for k in range(args.rounds):
        order = names if k % 2 == 0 else names[::-1]
        runs: dict[str, dict] = {}
        for name in order:
            if k and (BY_NAME[name].kind in ONCE or name in failed):
                continue
            print(f"[tracin bench] {BY_NAME[name].label} (round {k + 1}/{args.rounds}) ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            try:
                runs[name] = run_method(args, name)
            except subprocess.CalledProcessError as err:  # a failed peer does not lose the rest
                failed[name] = str(err)
                print(f"[tracin bench]   FAILED: {err}", file=sys.stderr, flush=True)
                continue
            print(f"[tracin bench]   {runs[name]['seconds']:.2f} s", file=sys.stderr, flush=True)
        rounds.append(runs)
    return rounds, failed


def median_runs(rounds: list[dict]) -> dict[str, dict]:
    """Each method's run from the round of its median time (the lower middle when even)."""
    names = dict.fromkeys(name for runs in rounds for name in runs)
    median = {}
    for name in names:
        timed = sorted((runs[name] for runs in rounds if name in runs), key=lambda r: r["seconds"])
        median[name] = timed[(len(timed) - 1) // 2]
    return median


def run_all(args: argparse.Namespace) -> dict:
    """Checkpoints, then every selected method in its worker, the table and the checks."""
    checkpoints = make_checkpoints(args, args.workdir)
    names = [m.name for m in METHODS if m.kind != "memory" and not (args.skip_peers and m.peer)]
    names = [n for n in names if not args.only or n in args.only]
    if args.model != "e5-sib200":
        names = [n for n in names if n != "train_step"]
    rounds, failed = time_rounds(args, names)
    runs = median_runs(rounds)
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
        "rounds": [{name: r["seconds"] for name, r in runs_k.items()} for runs_k in rounds],
        "paired_checks": None,
        "table": format_table(rows, args),
        "profile": None,
        "memory": None,
    }
    print(result["table"])
    print("\n".join(result["checks"]))
    if args.rounds > 1:
        round_rows = [report(args, runs_k, len(checkpoints), errors=False) for runs_k in rounds]
        paired = paired_verdict(round_rows, args)
        result["paired_checks"] = paired
        print(f"Paired within {args.rounds} rounds:", *format_paired(paired), sep="\n")
    hashes = {r["engine_hash"] for runs_k in rounds for r in runs_k.values()}
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
