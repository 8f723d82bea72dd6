"""A logged fine-tuning, rebuilt step for step: what method=metagradient differentiates.

From a train run (steps/upstream.TrainRun): its parameters, manifests and recorded RNG
states: the initial model (the same build and seed), the same shuffled batches per epoch
and learning rate per step (training.epoch_batches, learning_rates), and the CPU RNG state
before each step, which fixes dropout's masks (artifacts.rng_states). Before any
metagradient is trusted, the replay is run forward once and its final parameters compared
with the run's own last checkpoint: a replay that does not reproduce the run is refused,
not differentiated.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from xlinfluence import modeling
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.errors import ArtifactError, ConfigError
from xlinfluence.steps.train import texts_of
from xlinfluence.steps.upstream import TrainRun
from xlinfluence.tracin.engine import Batch
from xlinfluence.tracin.memory import CACHE_SHARE, device_memory
from xlinfluence.training import checkpoint_name, epoch_batches, learning_rates
from xlinfluence.training import metagradient as mg

#: the replay's final parameters may differ from the logged checkpoint's by rounding only
#: (the functional AdamW and torch's fused one order their float32 operations differently)
REPRODUCTION_TOLERANCE = 1e-4


@dataclass
class Replay:
    model: nn.Module  # the initial model (before step 1), in float32
    batches: list[Batch]  # every training step's batch, in order
    learning_rates: list[float]
    rng_states: list[torch.Tensor]  # the CPU RNG state before each step (dropout)
    optimizer: mg.AdamW
    train: pd.DataFrame
    test_examples: TokenizedExamples
    final_checkpoint: str

    @property
    def segment(self) -> int:
        """Steps recomputed together in the backward pass: as few as the saved states (one
        per segment) allow within CACHE_SHARE of memory. One step per segment is fastest
        (about 3 trainings per output on the tiny preset; longer segments were slower there,
        4.4 s at 4 and 11.7 s at 14 against 2.7 s). A saved state measured 0.62 GB per step
        on e5-small (22.6M float32 parameters): about 7 copies of the parameters, the three
        of (parameters, both AdamW moments) and what autograd keeps at each boundary."""
        state = 7 * sum(p.numel() * p.element_size() for p in self.model.parameters())
        saved = max(1, int(CACHE_SHARE * device_memory(torch.device("cpu"))) // state)
        return max(1, -(-len(self.batches) // saved))

    def final_parameters(self) -> list[torch.Tensor]:
        ones = torch.ones(len(self.train))
        with torch.no_grad():
            return mg.train(self.model, self.batches, self.learning_rates, ones,
                            optimizer=self.optimizer, rng_states=self.rng_states)  # fmt: skip

    def test_loss_gradient(self, rows: list[int]) -> torch.Tensor:
        """(n_train,) d (mean loss of test `rows` at the final model) / d w_i, through the run."""
        loader = make_loader(self.test_examples, len(rows), indices=rows)
        output = mg.test_loss_output(self.model, list(loader))
        return mg.data_weight_gradient(
            self.model, self.batches, self.learning_rates, len(self.train), output,
            optimizer=self.optimizer, segment=self.segment, rng_states=self.rng_states,
        )  # fmt: skip


def of_train_run(train_run: TrainRun) -> Replay:
    """The replay of a finished train run (trained on its whole selection, on one process)."""
    config = train_run.config
    if config.remove:
        raise ConfigError(
            f"method=metagradient replays a fine-tuning on its whole selection; train run "
            f"{train_run.run_id} removed rows (remove={config.remove!r}). Score the run it "
            "was derived from, or train one without remove."
        )
    if train_run.metrics.get("num_processes", 1) != 1:
        raise ConfigError(
            f"train run {train_run.run_id} trained on "
            f"{train_run.metrics['num_processes']:.0f} processes; method=metagradient replays "
            "single-process runs. Train on one."
        )
    train, test = train_run.train, train_run.test
    built = modeling.build(
        config.model, num_labels=len(train_run.labels()), train_texts=texts_of(train),
        test_texts=texts_of(test), seed=config.training_seed, trim_vocab=config.trim_vocab,
    )  # fmt: skip
    batches = epoch_batches(
        TokenizedExamples(train, built.tokenizer, config.max_length), config.batch_size,
        config.epochs, config.training_seed,
    )  # fmt: skip
    steps = len(batches)
    return Replay(
        model=built.model.float(),
        batches=batches,
        learning_rates=learning_rates(steps, config.learning_rate, config.warmup_ratio),
        rng_states=_rng_states(train_run, config.epochs, steps),
        optimizer=mg.AdamW(weight_decay=config.weight_decay),
        train=train,
        test_examples=TokenizedExamples(test, built.tokenizer, config.max_length),
        final_checkpoint=checkpoint_name(config.epochs),
    )


def _rng_states(train_run: TrainRun, epochs: int, steps: int) -> list[torch.Tensor]:
    states = [train_run.rng_states(checkpoint_name(epoch)) for epoch in range(1, epochs + 1)]
    every = [state for epoch in states for state in epoch]
    if len(every) != steps:
        raise ArtifactError(
            f"train run {train_run.run_id} recorded {len(every)} RNG states for {steps} "
            "steps; its batches are not the ones this version cuts. Retrain it with this "
            "version."
        )
    return every


def verified(train_run: TrainRun) -> tuple[Replay, float]:
    """The replay and its largest parameter difference from the run's last checkpoint
    (relative to the largest parameter); refused above REPRODUCTION_TOLERANCE."""
    replay = of_train_run(train_run)
    logged, _ = modeling.load_checkpoint(train_run.checkpoint(replay.final_checkpoint))
    names = [n for n, p in replay.model.named_parameters() if p.requires_grad]
    want = dict(logged.named_parameters())
    got = replay.final_parameters()
    difference = max(float((g - want[n]).abs().max()) for n, g in zip(names, got, strict=True))
    scale = max(float(p.abs().max()) for p in want.values())
    relative = difference / scale
    if not relative <= REPRODUCTION_TOLERANCE:
        raise ArtifactError(
            f"replaying train run {train_run.run_id} does not reproduce its checkpoint "
            f"{replay.final_checkpoint} (largest parameter difference {relative:.1e} of the "
            f"largest parameter, tolerance {REPRODUCTION_TOLERANCE:.0e}): it was trained by "
            "other code (see its xlinfluence.numbers_version tag). Retrain it with this version."
        )
    return replay, relative
