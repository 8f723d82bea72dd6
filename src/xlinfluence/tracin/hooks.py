"""Which modules TracIn tracks, and the forward hooks that capture them.

Exact per-layer TracIn needs, for every module holding a selected parameter, the module's
input (activations or token ids) and the gradient of the summed loss with respect to the
module's output. The hooks here only capture and release; they know nothing about scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xlinfluence.errors import ConfigError

ParamFilter = Callable[[str], bool]

SUPPORTED_MODULES = (nn.Linear, nn.Embedding, nn.LayerNorm)


class UnsupportedModuleError(ConfigError):
    """A selected trainable parameter lives where the exact TracIn engine cannot reach it."""


@dataclass(frozen=True)
class TrackedModule:
    """A module with at least one selected parameter; `weight`/`bias` say which are selected."""

    name: str
    module: nn.Module
    weight: bool
    bias: bool


def _is_supported(module: nn.Module) -> bool:
    """A supported class whose forward is the stock one (a subclass may compute differently)."""
    for cls in SUPPORTED_MODULES:
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return True
    return False


def select_modules(
    model: nn.Module, param_filter: ParamFilter | None = None
) -> list[TrackedModule]:
    """The modules to hook: every owner of a trainable parameter that `param_filter` keeps.

    `param_filter` is a predicate on the full parameter name, e.g.
    `roberta.encoder.layer.0.attention.self.query.weight`; weight and bias are filtered
    independently. Raises UnsupportedModuleError for a selected parameter that is not the
    weight or bias of an nn.Linear, nn.Embedding or nn.LayerNorm, or that is shared by
    several modules (tied weights need cross terms the per-layer contraction does not form).
    """
    owners: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{mod_name}.{p_name}" if mod_name else p_name)

    selected: dict[str, dict[str, bool]] = {}
    modules: dict[str, nn.Module] = dict(model.named_modules())
    for name, param in model.named_parameters():
        if not param.requires_grad or (param_filter is not None and not param_filter(name)):
            continue
        if len(owners[id(param)]) > 1:
            raise UnsupportedModuleError(
                f"parameter {name!r} is shared by {owners[id(param)]}; exact TracIn over tied "
                "weights is not supported. Exclude it with param_filter or untie the weights."
            )
        mod_name, _, leaf = name.rpartition(".")
        module = modules[mod_name]
        if not _is_supported(module) or leaf not in ("weight", "bias"):
            raise UnsupportedModuleError(
                f"parameter {name!r} belongs to a {type(module).__name__}, which the exact "
                "TracIn engine does not support (only nn.Linear, nn.Embedding and nn.LayerNorm "
                "with their stock forward). Exclude it with param_filter, or freeze it "
                "(requires_grad=False)."
            )
        if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
            raise UnsupportedModuleError(
                f"parameter {name!r}: nn.Embedding with scale_grad_by_freq=True has a "
                "batch-dependent gradient; exclude it with param_filter."
            )
        selected.setdefault(mod_name, {"weight": False, "bias": False})[leaf] = True

    return [
        TrackedModule(name=n, module=modules[n], weight=flags["weight"], bias=flags["bias"])
        for n, flags in selected.items()
    ]


class ActivationCapture:
    """Forward hooks over tracked modules, registered on enter and removed on exit.

    After a forward pass, `inputs[name]` holds each module's (detached) first input and
    `output_grads(loss)` returns d loss / d output for every module in one autograd call,
    which was measured faster than `.backward()` into `.grad`. Call `clear()` before
    each forward pass.

    Set `batch_size` before a forward pass to make broadcast embedding lookups per example:
    BERT looks its position embeddings up once, (1, T), and broadcasts them over the batch,
    which would leave only the batch's summed gradient. Expanding the ids to (B, T) gives
    the same activations and one gradient per example.
    """

    def __init__(self, tracked: list[TrackedModule]):
        self.tracked = tracked
        self.batch_size: int | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self._outputs: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ActivationCapture:
        for t in self.tracked:
            hook = self._hook(t.name)
            self._handles.append(t.module.register_forward_hook(hook, with_kwargs=True))
            if isinstance(t.module, nn.Embedding):
                self._handles.append(t.module.register_forward_pre_hook(self._per_example))
        return self

    def _per_example(self, module: nn.Module, args: tuple) -> tuple | None:
        ids = args[0] if args else None
        if self.batch_size and ids is not None and ids.shape[0] == 1 < self.batch_size:
            return (ids.expand(self.batch_size, *ids.shape[1:]), *args[1:])
        return None

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    def clear(self) -> None:
        self.inputs.clear()
        self._outputs.clear()
        self._versions.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if name in self._outputs:
                raise UnsupportedModuleError(
                    f"module {name!r} ran twice in one forward pass; exact TracIn needs each "
                    "tracked module called once. Exclude its parameters with param_filter."
                )
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                raise RuntimeError(
                    f"output of module {name!r} does not require grad; run the forward pass "
                    "with gradients enabled."
                )
            x = args[0] if args else next(iter(kwargs.values()))  # the module's input
            self.inputs[name] = x.detach()
            self._outputs[name] = output
            self._versions[name] = output._version

        return hook

    def output_grads(self, loss: torch.Tensor, retain: bool = False) -> dict[str, torch.Tensor]:
        """d loss / d output per tracked module (zeros where the loss does not depend on it);
        retain keeps the graph and the outputs for another loss of the same forward pass."""
        missing = [t.name for t in self.tracked if t.name not in self._outputs]
        if missing:
            raise RuntimeError(f"tracked modules did not run in the forward pass: {missing}")
        names = list(self._outputs)
        for n in names:
            if self._outputs[n]._version != self._versions[n]:
                raise UnsupportedModuleError(
                    f"the output of module {n!r} was modified in place after the module ran, "
                    "so its captured gradient would be wrong. Exclude its parameters with "
                    "param_filter."
                )
        outputs = [self._outputs[n] for n in names]
        grads = torch.autograd.grad(loss, outputs, retain_graph=retain, allow_unused=True)
        if not retain:
            self._outputs.clear()  # release the graph
        return {
            n: torch.zeros_like(o) if g is None else g
            for n, o, g in zip(names, outputs, grads, strict=True)
        }
