"""The floor of bench/retraining.py: a plain transformers fine-tuning loop, no tracking.

The same rows and the same e5-small set-up as the train step (xlinfluence's selection and
trimmed model), then what a tutorial writes: tokenise, DataCollatorWithPadding, AdamW with
a linear schedule, torch.autocast at the given precision, and one evaluation of the test
set after the last epoch. Prints its wall time.
"""

from __future__ import annotations

import argparse
import time

STARTED = time.perf_counter()

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup  # noqa: E402

from xlinfluence import modeling  # noqa: E402
from xlinfluence.data import load_splits  # noqa: E402
from xlinfluence.steps.train import texts_of  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-path", required=True)
    p.add_argument("--languages", default="en,de,fr,ru,zh")
    p.add_argument("--per-language", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    langs = args.languages.split(",")
    splits = load_splits(dataset="sib200", data_path=args.data_path, languages=langs,
                         train_counts={lang: args.per_language for lang in langs},
                         test_per_language=args.per_language, seed=42)  # fmt: skip
    built = modeling.build("e5-small", num_labels=len(splits.label_names),
                           train_texts=texts_of(splits.train), test_texts=texts_of(splits.test),
                           seed=42)  # fmt: skip
    model, tokenizer = built.model, built.tokenizer

    def encoded(frame):
        ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=128)["input_ids"]
        return [
            {"input_ids": i, "labels": int(y)} for i, y in zip(ids, frame["label"], strict=True)
        ]

    collate = DataCollatorWithPadding(tokenizer)
    train = DataLoader(encoded(splits.train), batch_size=16, shuffle=True, collate_fn=collate)
    test = DataLoader(encoded(splits.test), batch_size=32, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    total = args.epochs * len(train)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    autocast = torch.autocast("cpu", dtype=dtype, enabled=args.precision != "fp32")
    model.train()
    for _ in range(args.epochs):
        for batch in train:
            with autocast:
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
            torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    correct = 0
    with torch.no_grad(), autocast:
        for batch in test:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
    print(f"accuracy {correct / len(splits.test):.3f}; {time.perf_counter() - STARTED:.1f} s")


if __name__ == "__main__":
    main()
