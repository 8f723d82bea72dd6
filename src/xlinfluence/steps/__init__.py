"""Pipeline steps: each turns a step config into a tracked MLflow run of its kind."""

import torch

_DEFAULT_THREADS = torch.get_num_threads()  # torch's default: one per core


def set_threads(threads: int) -> None:
    """torch's intra-op threads; 0 is torch's default (one per core), also after an earlier
    step in this process chose another count: the thread count changes float summation
    order, so the same parameters must mean the same count. Two processes that each use
    every core of a small machine slow each other many-fold."""
    torch.set_num_threads(threads if threads > 0 else _DEFAULT_THREADS)
