"""The train step against a plain loop, alternating on one process: `training.fine_tune`
for one epoch (its loop time and its total with set-up) and a plain forward / backward /
AdamW loop on exactly its batches (`training.epoch_batches`), from the same weights.

    python bench/train_step_ab.py --per-language 60 --repeat 2
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tracin_setup import SIB200, sib200_e5
from transformers import get_linear_schedule_with_warmup

from xlinfluence.data.batching import TokenizedExamples
from xlinfluence.training import epoch_batches, fine_tune


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", default=SIB200)
    p.add_argument("--languages", default="en,de,fr,ru,zh")
    p.add_argument("--per-language", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits, built = sib200_e5(str(args.data_path), args.languages, args.per_language, 5,
                              args.seed)  # fmt: skip
    weights = copy.deepcopy(built.model.state_dict())
    examples = TokenizedExamples(splits.train, built.tokenizer, args.max_len)
    batches = epoch_batches(examples, args.batch_size, 1, args.seed)

    def plain() -> float:
        model = built.model
        model.load_state_dict(weights)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * len(batches)), len(batches))
        started = time.perf_counter()
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            F.cross_entropy(logits.float(), b["labels"]).backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    def ours() -> tuple[float, float]:
        built.model.load_state_dict(weights)
        loop: dict[str, float] = {}
        started = time.perf_counter()
        fine_tune(built.model, built.tokenizer, splits.train, splits.test.iloc[:1], epochs=1,
                  batch_size=args.batch_size, learning_rate=args.lr, weight_decay=0.01,
                  warmup_ratio=0.1, max_length=args.max_len, seed=args.seed,
                  accelerator=Accelerator(cpu=True), checkpoint_root=None,
                  on_epoch_end=lambda metrics, *_: loop.update(s=metrics.seconds))  # fmt: skip
        return time.perf_counter() - started, loop["s"]

    for rep in range(args.repeat):
        base = plain()
        total, loop = ours()
        print(f"repeat {rep}: plain loop {base:.1f} s; fine_tune loop {loop:.1f} s "
              f"({loop / base:.3f}x), with set-up {total:.1f} s ({total / base:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
