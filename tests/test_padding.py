"""Padding independence of the speech encoders in train mode (masked BatchNorm statistics)
and in squeeze-excitation pooling (issue 12)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from blspeech.models import build_model, fuse
from blspeech.models.blocks import MaskedBatchNorm1d, MaskedBatchNorm2d
from blspeech.models.speech import make_exportable

ENCODERS = ["resnet_am_tiny", "bl_resnet_am_tiny", "quartznet_tiny", "conformer_tiny",
            "se_resnet_am_tiny", "bl_se_resnet_am_tiny"]
SE = dict(block="se", cardinality=1, base_width=64)


def _build(name: str) -> nn.Module:
    """A tiny encoder without dropout (train-mode outputs must be deterministic) and with
    non-trivial BN affine parameters (init zeroes each block's last gamma, which would hide
    every residual branch)."""
    torch.manual_seed(0)
    if "se_resnet" in name:
        enc = build_model(name.replace("se_", ""), dropout=0.0, **SE)
    else:
        enc = build_model(name, dropout=0.0)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
    return enc


def _bn_stats(enc: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in enc.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _train_step(name: str, lengths: list[int], dtype: torch.dtype = torch.float32
                ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor], nn.Module]]:
    """One train-mode forward/backward of the same utterances, padded to their longest
    and with 80 more frames; per run: valid outputs (concatenated), BN statistics, model."""
    torch.manual_seed(1)
    enc = _build(name).to(dtype).train()
    feats = torch.randn(len(lengths), max(lengths) + 80, 40, dtype=dtype)
    for i, n in enumerate(lengths):  # padding is garbage: only valid frames may matter
        feats[i, n:] = 5 * torch.randn(feats.shape[1] - n, 40, dtype=dtype)
    runs = []
    for frames in (max(lengths), feats.shape[1]):
        model = copy.deepcopy(enc)
        out, out_lens = model(feats[:, :frames], torch.tensor(lengths))
        valid = torch.cat([out[i, :n] for i, n in enumerate(out_lens.tolist())])
        valid.square().sum().backward()
        runs.append((valid.detach(), _bn_stats(model), model))
    return runs


@pytest.mark.parametrize("lengths", [[157, 101, 60], [157, 157]], ids=["ragged", "full"])
@pytest.mark.parametrize("name", ENCODERS)
def test_train_mode_does_not_depend_on_padding(name, lengths):
    (out, stats, _), (out_p, stats_p, _) = _train_step(name, lengths)
    torch.testing.assert_close(out_p, out, rtol=1e-5, atol=1e-5)
    assert stats.keys() == stats_p.keys() and stats
    for k in stats:
        torch.testing.assert_close(stats_p[k], stats[k], rtol=1e-6, atol=1e-6, msg=k)


@pytest.mark.parametrize("name", ENCODERS)
def test_train_gradients_do_not_depend_on_padding(name):
    # In float64: in float32, a ReLU input within rounding of 0 can flip its gate between
    # the two runs, which moves some gradients by O(1) without any padding leak.
    (_, _, enc), (_, _, enc_p) = _train_step(name, [157, 101, 60], torch.float64)
    for (k, p), p_p in zip(enc.named_parameters(), enc_p.parameters(), strict=True):
        torch.testing.assert_close(p_p.grad, p.grad, rtol=1e-9, atol=1e-9, msg=k)


@pytest.mark.parametrize("name", ENCODERS)
def test_train_bn_normalizes_over_valid_frames_only(name):
    # Also checks the Conformer, whose batch is trimmed to its longest utterance (so the
    # test above cannot vary its padding): each train-mode BN output has, per channel,
    # mean ``bias`` over the valid time steps (and any value at padded ones).
    enc = _build(name).train()
    lengths = torch.tensor([157, 101, 60, 9])
    valid = {-(-157 // 2**k): -(-lengths // 2**k) for k in range(3)}  # time size -> lengths
    seen = []

    def check(bn: nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        lens = valid[out.shape[-1]]
        mask = torch.arange(out.shape[-1])[None, :] < lens[:, None]
        mask = mask.view(len(lens), *[1] * (out.dim() - 3), -1).expand_as(out.transpose(0, 1)[0])
        rows = out.transpose(0, 1)[:, mask]  # (C, valid positions)
        torch.testing.assert_close(rows.mean(1), bn.bias, rtol=1e-4, atol=1e-4)
        seen.append(bn)

    for m in enc.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(check)
    with torch.no_grad():
        enc(torch.randn(4, 157, 40), lengths)
    assert len(seen) == sum(isinstance(m, nn.modules.batchnorm._BatchNorm)
                            for m in enc.modules())


@pytest.mark.parametrize("name", ["se_resnet_am_tiny", "bl_se_resnet_am_tiny"])
def test_eval_se_utterance_alone_equals_padded_batch(name):
    enc = _build(name)
    with torch.no_grad():  # non-trivial running statistics
        for m in enc.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
    enc.eval()
    lengths = [157, 101, 9, 60]
    feats = torch.randn(4, 200, 40)
    with torch.no_grad():
        out, out_lens = enc(feats, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone, alone_lens = enc(feats[i:i + 1, :n], torch.tensor([n]))
            assert alone_lens.item() == out_lens[i].item()
            torch.testing.assert_close(out[i, :out_lens[i]], alone[0], rtol=1e-5, atol=1e-5)
        # Static (export) masks and folded BNs give the same numbers, SE pooling included.
        static = make_exportable(copy.deepcopy(enc), 40)
        torch.testing.assert_close(static(feats, torch.tensor(lengths))[0], out,
                                   rtol=1e-5, atol=1e-5)
        fused = fuse(enc)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
        torch.testing.assert_close(fused(feats, torch.tensor(lengths))[0], out,
                                   rtol=1e-4, atol=1e-4)


def _valid(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """(N, C) rows: the valid (utterance, freq, time) positions of (B, C, [F,] T) ``x``."""
    rows = [x[i, ..., :n].reshape(x.shape[1], -1).T for i, n in enumerate(lengths)]
    return torch.cat(rows)


@pytest.mark.parametrize("momentum", [0.3, None])  # None: cumulative average
@pytest.mark.parametrize("dims", [1, 2])
def test_masked_batch_norm_equals_batch_norm_over_valid_positions(dims, momentum):
    torch.manual_seed(0)
    lengths = [23, 17, 5]
    shape = (3, 6, 7, 23) if dims == 2 else (3, 6, 23)
    x = (3 * torch.randn(*shape) + 1).requires_grad_()
    masked = (MaskedBatchNorm2d if dims == 2 else MaskedBatchNorm1d)(6, momentum=momentum)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 1.5)
        masked.bias.normal_()
    ref = nn.BatchNorm1d(6, momentum=momentum)
    ref.load_state_dict(masked.state_dict())
    mask = torch.arange(23)[None, :] < torch.tensor(lengths)[:, None]
    view = (3, 1, 1, 23) if dims == 2 else (3, 1, 23)
    masked.time_mask = lambda _module, t: mask.view(view).to(t.dtype)
    out = masked(x)
    x_valid = _valid(x.detach(), lengths).requires_grad_()
    out_ref = ref(x_valid)
    torch.testing.assert_close(_valid(out, lengths), out_ref, rtol=1e-5, atol=1e-5)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(masked.state_dict()[k], v, rtol=1e-6, atol=1e-6, msg=k)
    g = torch.randn_like(out_ref)  # any loss of the valid outputs
    (out_ref * g).sum().backward()
    (_valid(out, lengths) * g).sum().backward()
    torch.testing.assert_close(_valid(x.grad, lengths), x_valid.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(masked.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(masked.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)
    # Eval mode uses the running statistics, as plain BN does.
    masked.eval()
    ref.eval()
    torch.testing.assert_close(_valid(masked(x), lengths), ref(x_valid), rtol=1e-5, atol=1e-5)


def test_masked_batch_norm_keeps_channels_last_layout_in_both_directions():
    # Speed, not numbers: ops that mix channels-last activations with (B, C, 1, T)
    # operands come out strided and are 3-4x slower, and so is every op after them.
    torch.manual_seed(0)
    leaf = torch.randn(4, 8, 5, 12).contiguous(memory_format=torch.channels_last)
    x = leaf.requires_grad_() * 1  # not a leaf: .grad of a leaf is re-laid out
    grads = []
    x.register_hook(grads.append)  # the gradient as the backward pass made it
    bn = MaskedBatchNorm2d(8)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 9, 12, 4])[:, None]).float()
    bn.time_mask = lambda _module, t: mask.view(4, 1, 1, 12).to(t.dtype)
    out = bn(x)
    out.backward(torch.randn_like(out))  # randn_like keeps channels-last
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)


def test_encoders_use_masked_bn_with_unchanged_state_dict_keys():
    enc = build_model("bl_resnet_am_tiny")
    bns = [m for m in enc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, MaskedBatchNorm2d) for m in bns)
    keys = set(enc.state_dict())
    assert "stem.1.running_var" in keys and "stages.0.little_e.1.weight" in keys
    enc.load_state_dict(copy.deepcopy(enc).state_dict())  # strict
    qn = build_model("quartznet_tiny")
    assert all(isinstance(m, MaskedBatchNorm1d) for m in qn.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))
