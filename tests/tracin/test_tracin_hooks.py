"""Module selection and the capture hooks: what is tracked, and clear errors otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tracin_fixtures import N_TEST, N_TRAIN, rel_err

from xlinfluence.tracin import UnsupportedModuleError, checkpoint_scores, reference_scores
from xlinfluence.tracin.hooks import ActivationCapture, select_modules


class ConvNet(nn.Module):
    """Embedding -> Conv1d -> masked mean -> LayerNorm -> Linear; the Conv1d is unsupported."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(300, 8, padding_idx=1)
        self.conv = nn.Conv1d(8, 8, kernel_size=1)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(self.emb.weight.dtype)  # (B, T, 1)
        h = self.conv(self.emb(input_ids).transpose(1, 2)).transpose(1, 2)  # (B, T, 8)
        h = (h * mask).sum(1) / mask.sum(1)  # (B, 8)
        return self.head(self.norm(h))


def test_unsupported_module_raises_with_name_and_fix():
    with pytest.raises(UnsupportedModuleError, match=r"'conv\.weight'.*Conv1d.*param_filter"):
        select_modules(ConvNet())


def test_unsupported_module_can_be_filtered_out(train_batches, test_batches):
    model = ConvNet()
    keep = lambda n: not n.startswith("conv.")  # noqa: E731
    got = checkpoint_scores(
        model, train_batches, test_batches, n_train=N_TRAIN, n_test=N_TEST, param_filter=keep
    )
    expected = reference_scores(
        ConvNet().double(),
        train_batches,
        test_batches,
        n_train=N_TRAIN,
        n_test=N_TEST,
        param_filter=keep,
    )
    assert rel_err(got, expected) <= 1e-5


def test_frozen_parameters_are_skipped():
    model = ConvNet()
    model.conv.requires_grad_(False)
    assert [t.name for t in select_modules(model)] == ["emb", "norm", "head"]


def test_weight_and_bias_are_filtered_independently(model):
    tracked = {t.name: t for t in select_modules(model, lambda n: n.startswith("classifier."))}
    assert set(tracked) == {"classifier.dense", "classifier.out_proj"}
    only_bias = select_modules(model, lambda n: n == "classifier.out_proj.bias")
    assert [(t.name, t.weight, t.bias) for t in only_bias] == [("classifier.out_proj", False, True)]
    names = {t.name for t in select_modules(model)}
    assert "roberta.embeddings.position_embeddings" in names
    assert "roberta.embeddings.token_type_embeddings" in names


def test_tied_weights_raise():
    model = ConvNet()
    model.conv.requires_grad_(False)
    model.out = nn.Linear(8, 300)
    model.out.weight = model.emb.weight  # (300, 8) shared
    with pytest.raises(UnsupportedModuleError, match="shared"):
        select_modules(model)


def test_module_called_twice_raises():
    lin = nn.Linear(4, 4)
    capture = ActivationCapture(select_modules(nn.Sequential(lin)))
    with capture, pytest.raises(UnsupportedModuleError, match="twice"):
        lin(lin(torch.randn(2, 4)))


def test_output_modified_in_place_raises():
    lin = nn.Linear(4, 4)
    with ActivationCapture(select_modules(nn.Sequential(lin))) as capture:
        out = lin(torch.randn(2, 4))
        out.mul_(2)
        with pytest.raises(UnsupportedModuleError, match="in place"):
            capture.output_grads(out.sum())


def test_hooks_are_removed_on_exit(model):
    tracked = select_modules(model)
    with ActivationCapture(tracked):
        assert all(t.module._forward_hooks for t in tracked)
    assert not any(t.module._forward_hooks for t in tracked)


def test_capture_gives_inputs_and_output_grads():
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    with ActivationCapture(select_modules(nn.Sequential(lin))) as capture:
        y = lin(x)
        grads = capture.output_grads((y**2).sum())
        torch.testing.assert_close(capture.inputs["0"], x)
    torch.testing.assert_close(grads["0"], 2 * y.detach())


def test_keyword_input_is_captured():
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    with ActivationCapture(select_modules(nn.Sequential(lin))) as capture:
        lin(input=x)
        torch.testing.assert_close(capture.inputs["0"], x)
