"""Pipeline steps: each turns a step config into a tracked MLflow run of its kind."""

import torch


def set_threads(threads: int) -> None:
    """torch's intra-op threads; 0 keeps torch's default (one per core). Two processes that
    each use every core of a small machine slow each other many-fold."""
    if threads > 0:
        torch.set_num_threads(threads)
