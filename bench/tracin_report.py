"""The TracIn bench's report: table rows from the workers' measurements, the text table,
and the checks against the project's speed targets, for one run or paired over rounds."""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch
from safetensors.torch import load_file
from scipy import stats
from tracin_methods import BY_NAME, METHODS

TARGETS = {  # the project's speed goals, checked and printed
    "captum_all": 20.0,  # xlinfluence at least 20x faster than Captum over all parameters
    "captum_samplewise": 2.0,  # at least 2x faster than Captum's sample-wise Linear-only mode
    "dattri": 2.0,  # at least 2x faster than dattri-llm's exact mode on the same layers
    "train_epoch": 1.5,  # at most 1.5x one training epoch per checkpoint (synthetic)
    "train_epoch_real": 0.75,  # at most 0.75x a shuffled epoch on e5-small + SIB-200
    "train_step": 1.10,  # the train step within 10% of the plain loop on the same batches
}


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


def report(
    args: argparse.Namespace, runs: dict[str, dict], n_ckpt: int, errors: bool = True
) -> list[dict]:
    """Table rows: time, ratios, memory, error against the float64 reference of the same
    params (errors=False skips reading the scores back: a round's ratios need none)."""
    truth = {}
    for group, name in (
        ("all", "reference_fp64"),
        ("linear", "reference_fp64_linear"),
        ("embeddings", "reference_fp64_embeddings"),
    ):
        if errors and name in runs:
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
                    row["us_per_pair_per_checkpoint"] / per_pair[m.group], 4
                )
            if epoch:
                row["x_train_epoch"] = round(full_ckpt / epoch, 4)
            found = args.workdir / f"{m.name}.safetensors"
            if m.group in truth and found.exists():  # the floor computes no scores
                row["max_rel_err"] = max_rel_err_shared(load_file(str(found)), truth[m.group])
        elif epoch:
            row["x_train_epoch"] = round(r["seconds"] / epoch, 4)
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
        + f", test gradients {args.test_gradients})"
        f", {args.checkpoints} checkpoints, {args.device} "
        f"{args.precision}, {args.threads} thread(s), fastest of {args.repeat}"
        + (f", the median of {args.rounds} rounds." if args.rounds > 1 else ".")
    )
    return "\n".join([*aligned(HEAD, [_cells(r) for r in rows if r["table"]]), setting, LEGEND])


def checks(args: argparse.Namespace) -> list[tuple[str, str, str, float, str]]:
    """(method, ratio key of its row, direction, target, what) for each speed target."""
    epoch_target = TARGETS["train_epoch_real" if args.model == "e5-sib200" else "train_epoch"]
    return [
        ("captum", "x_xlinfluence", ">=", TARGETS["captum_all"], "Captum all-params / xlinfluence"),
        ("captum_samplewise", "x_xlinfluence", ">=", TARGETS["captum_samplewise"],
         "Captum sample-wise Linear / xlinfluence Linear"),
        ("dattri_llm", "x_xlinfluence", ">=", TARGETS["dattri"],
         "dattri-llm exact / xlinfluence, same layers"),
        ("xlinfluence", "x_train_epoch", "<=", epoch_target,
         "xlinfluence per checkpoint / training epoch"),
        ("train_step", "x_train_epoch", "<=", TARGETS["train_step"], "train step / plain loop"),
    ]  # fmt: skip


def verdict(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Each target against the ratio of single timings (no interval: see paired_verdict)."""
    by = {r["method"]: r for r in rows}
    lines = []
    for name, key, op, target, what in checks(args):
        if key not in by.get(name, {}):
            continue
        value = by[name][key]
        ok = value >= target if op == ">=" else value <= target
        lines.append(f"{'MET ' if ok else 'MISSED'}  {what} = {value:.2f} (target {op} {target})")
    return lines


def paired_verdict(
    rounds: list[list[dict]], args: argparse.Namespace, level: float = 0.05
) -> list[dict]:
    """Each target against its ratio paired within rounds, with an interval.

    A round times every method once, in alternating order, so a slow spell of the machine
    lands on both sides of a ratio; the rounds are the unit. The ratio is the geometric
    mean over rounds with a t interval on the log ratios, widened for the number of checks
    (Bonferroni: all intervals hold together with probability 1 - level). A check is MET
    when its whole interval lies on the target's side, MISSED when it lies on the other,
    UNSETTLED when it straddles the target (more rounds would settle it)."""
    by_round = [{r["method"]: r for r in rows} for rows in rounds]
    measured = []
    for name, key, op, target, what in checks(args):
        values = [by[name][key] for by in by_round if key in by.get(name, {})]
        if len(values) >= 2:
            measured.append((name, op, target, what, values))
    confidence = 1 - level / len(measured) if measured else 1 - level  # Bonferroni
    found = []
    for name, op, target, what, values in measured:
        mean, low, high = geometric_interval(values, confidence)
        good, bad = (low >= target, high < target) if op == ">=" else (high <= target, low > target)
        found.append({
            "method": name, "what": what, "op": op, "target": target, "rounds": len(values),
            "ratios": values, "geometric_mean": mean, "ci_low": low, "ci_high": high,
            "confidence": 1 - level, "checks": len(measured),
            "verdict": "MET" if good else "MISSED" if bad else "UNSETTLED",
        })  # fmt: skip
    return found


def geometric_interval(ratios: list[float], confidence: float) -> tuple[float, float, float]:
    """Geometric mean of ratios and its two-sided t interval, from the log ratios (a ratio's
    noise is multiplicative); the ratios are the independent units."""
    logs = np.log(ratios)
    low, high = stats.t.interval(confidence, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    return math.exp(logs.mean()), math.exp(low), math.exp(high)


def format_paired(found: list[dict]) -> list[str]:
    return [
        f"{f['verdict']:<9} {f['what']} = {f['geometric_mean']:.3f} "
        f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}] (target {f['op']} {f['target']}; "
        f"{f['rounds']} rounds: {', '.join(f'{r:.3f}' for r in f['ratios'])}; "
        f"{100 * f['confidence']:.0f}% simultaneous over {f['checks']} checks)"
        for f in found
    ]


def format_memory(rows: list[dict]) -> str:
    head = ("memory", "N", "M", "s", "peak MB", "+MB over set-up", "M x N matrix MB")
    lines = [
        (BY_NAME[r["method"]].label, str(r["n_train"]), str(r["n_test"]), f"{r['seconds']:.1f}",
         f"{r['peak_rss_mb']:.0f}", f"{r['rss_over_setup_mb']:.1f}", f"{r['matrix_mb']:.1f}")
        for r in rows
    ]  # fmt: skip
    return "\n".join(aligned(head, lines))
