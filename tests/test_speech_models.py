"""Speech encoders: shared interface, lengths, Big-Little savings, registry presets."""

from __future__ import annotations

import pytest
import torch

from blspeech.models import BigLittleModule, build_model, list_models
from blspeech.models.profile import count
from blspeech.models.speech import ResNetAM, subsampled_lengths

ENCODERS = ["resnet_am_tiny", "bl_resnet_am_tiny", "quartznet_tiny", "conformer_tiny"]


class _Fixed(torch.nn.Module):
    """Encoder with full-length inputs, so the profiler can call it with one tensor."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, torch.full((x.shape[0],), x.shape[1]))[0]


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("mel", [40, 80])
def test_interface_shapes_lengths_and_padding(name, mel):
    torch.manual_seed(0)
    enc = build_model(name, num_mel_bins=mel).train()
    lengths = torch.tensor([157, 101, 9])
    feats = torch.randn(3, 157, mel)
    out, out_lengths = enc(feats, lengths)
    sub = enc.time_subsampling
    expected = torch.tensor([-(-n // sub) for n in lengths.tolist()])
    assert torch.equal(out_lengths, expected)
    assert out.shape == (3, int(expected.max()), enc.output_size())
    for i, n in enumerate(out_lengths.tolist()):
        assert torch.count_nonzero(out[i, n:]) == 0  # padding is zero
        assert torch.count_nonzero(out[i, :n]) > 0
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ENCODERS)
def test_output_does_not_depend_on_batch_padding(name):
    torch.manual_seed(0)
    enc = build_model(name).eval()
    for m in enc.modules():  # BN shifts are what would leak into padded frames
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.bias.data.normal_(0, 0.5)
    lengths = [157, 101, 9, 60]
    feats = torch.randn(4, 200, 40)  # padded beyond the longest utterance too
    with torch.no_grad():
        out, out_lengths = enc(feats, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone, alone_len = enc(feats[i:i + 1, :n], torch.tensor([n]))
            assert alone_len.item() == out_lengths[i].item()
            torch.testing.assert_close(alone[0, :alone_len.item()],
                                       out[i, :out_lengths[i].item()], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sub", [1, 2, 4])
def test_resnet_am_time_subsampling(sub):
    enc = build_model("bl_resnet_am_tiny", time_subsampling=sub).eval()
    with torch.no_grad():
        out, lens = enc(torch.randn(1, 99, 40), torch.tensor([99]))
    assert out.shape[1] == lens.item() == -(-99 // sub)
    assert torch.equal(subsampled_lengths(torch.tensor([99]), sub), lens)


def test_big_little_stages_stride_frequency_only():
    enc = build_model("bl_resnet_am_tiny", num_mel_bins=40).eval()
    bl = [m for m in enc.stages if isinstance(m, BigLittleModule)]
    assert len(bl) == 3
    x = torch.randn(1, 1, 40, 50)
    with torch.no_grad():
        x = enc.stem(x)
        t = x.shape[-1]
        for stage in enc.stages:
            if isinstance(stage, BigLittleModule):
                assert stage.big(x).shape[-2:] == (-(-x.shape[-2] // 2), t)  # freq halves
            x = stage(x)
            assert x.shape[-1] == t  # time never changes inside the stages
    # The baseline and the bL model end at the same resolution and width.
    base = build_model("resnet_am_tiny", num_mel_bins=40)
    assert base.proj.in_features == enc.proj.in_features


def test_bl_resnet_am_saves_macs_over_its_baseline():
    # Counted, not assumed: 10 s of 40-bin features (1000 frames).
    x = torch.randn(1, 1000, 40)
    for preset in ("small", "swbd"):
        base = count(_Fixed(build_model(f"resnet_am_{preset}")), x, repeats=0)["macs"]
        bl = count(_Fixed(build_model(f"bl_resnet_am_{preset}")), x, repeats=0)["macs"]
        assert bl / base < 0.8, (preset, bl / base)


def test_registry_has_presets_and_rebuilds():
    names = set(list_models())
    for arch in ("resnet_am", "bl_resnet_am", "quartznet", "conformer"):
        assert {f"{arch}_tiny", f"{arch}_small", f"{arch}_swbd"} <= names
    enc = build_model("bl_resnet_am", num_mel_bins=80, alpha=4, block="bottleneck",
                      widths=[64, 128, 192, 256])
    assert isinstance(enc, ResNetAM)
    assert enc.config["num_mel_bins"] == 80 and enc.config["widths"] == [64, 128, 192, 256]
    with pytest.raises(ValueError, match="time_subsampling"):
        build_model("quartznet_tiny", time_subsampling=3)
    with pytest.raises(ValueError, match="one entry per stage"):
        build_model("resnet_am_tiny", blocks=[2, 2])


def _attention(pos_enc: str) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = build_model("conformer_tiny", pos_enc=pos_enc).eval()
    return enc.conformer.conformer_layers[0].self_attn


def test_relative_attention_depends_on_offsets_not_absolute_positions():
    """Frames prepended as masked keys shift every absolute position but no offset between
    the remaining frames: the relative attention's outputs there stay the same."""
    from blspeech.models.rel_attention import RelPositionMultiheadAttention

    attn = _attention("rel")
    assert isinstance(attn, RelPositionMultiheadAttention)
    torch.manual_seed(1)
    x = torch.randn(7, 2, attn.num_heads * attn.head_dim)
    lead = torch.randn(3, 2, x.shape[-1])
    longer = torch.cat([lead, x])
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :3] = True
    with torch.no_grad():
        alone, _ = attn(x, x, x, key_padding_mask=torch.zeros(2, 7, dtype=torch.bool))
        shifted, _ = attn(longer, longer, longer, key_padding_mask=mask)
    torch.testing.assert_close(shifted[3:], alone, rtol=1e-5, atol=1e-5)


def test_relative_attention_knows_the_order_of_frames_and_plain_attention_does_not():
    torch.manual_seed(2)
    perm = torch.randperm(9)
    for pos_enc, order_blind in (("none", True), ("rel", False)):
        attn = _attention(pos_enc)
        x = torch.randn(9, 1, attn.embed_dim if pos_enc == "none" else
                        attn.num_heads * attn.head_dim)
        no_mask = torch.zeros(1, 9, dtype=torch.bool)
        with torch.no_grad():
            out, _ = attn(x, x, x, key_padding_mask=no_mask, need_weights=False)
            permuted, _ = attn(x[perm], x[perm], x[perm], key_padding_mask=no_mask,
                               need_weights=False)
        assert torch.allclose(permuted, out[perm], atol=1e-5) == order_blind, pos_enc


def test_conformer_pos_enc_is_checked():
    from blspeech.errors import UserError

    with pytest.raises(UserError, match="pos_enc must be 'rel' or 'none'"):
        build_model("conformer_tiny", pos_enc="abs")
