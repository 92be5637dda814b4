"""Front-end modules: LogMel vs Kaldi references, CMVN, SpecAugment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as ta_kaldi

from blspeech.errors import UserError
from blspeech.frontend.features import CMVN, LogMel, SpecAugment, apply_cmvn
from blspeech.io.audio import AudioReader
from blspeech.io.kaldi import cmvn_stats

RATES = [("speech_data_dir_8k", 8000, 40), ("speech_data_dir", 16000, 80)]


def utterances(data_dir) -> list[np.ndarray]:
    reader = AudioReader(data_dir)
    return [reader.read(u) for u in reader.utterance_ids]


def torchaudio_fbank(audio: np.ndarray, rate: int, bins: int, **kw) -> torch.Tensor:
    wave = torch.from_numpy(audio).unsqueeze(0) * 32768.0
    return ta_kaldi.fbank(wave, num_mel_bins=bins, sample_frequency=rate, dither=0.0, **kw)


@pytest.mark.parametrize("fixture,rate,bins", RATES)
def test_logmel_equals_torchaudio_fbank(request, fixture, rate, bins):
    fbank = LogMel(sample_rate=rate, num_mel_bins=bins)
    for audio in utterances(request.getfixturevalue(fixture)):
        feats, frames = fbank(torch.from_numpy(audio).unsqueeze(0))
        ref = torchaudio_fbank(audio, rate, bins)
        assert feats.dtype == torch.float32 and frames.tolist() == [len(ref)]
        assert feats.shape == (1, len(ref), bins)
        assert (feats[0] - ref).abs().max() < 1e-4


@pytest.mark.parametrize("fixture,rate,bins", RATES)
def test_logmel_equals_kaldi_native_fbank(request, fixture, rate, bins):
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = rate
    opts.mel_opts.num_bins = bins
    fbank = LogMel(sample_rate=rate, num_mel_bins=bins)
    for audio in utterances(request.getfixturevalue(fixture))[:3]:
        online = knf.OnlineFbank(opts)
        online.accept_waveform(rate, (audio * 32768).tolist())
        online.input_finished()
        ref = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
        feats = fbank.compute([audio])[0].numpy()
        assert feats.shape == ref.shape
        # Mel bins ~80 dB below a frame's strongest one hold float32 FFT rounding noise in
        # every implementation (at 16 kHz, the 20-100 Hz bins of synthetic speech): there
        # kaldi-native-fbank and torchaudio differ by up to ~1e-2 from each other and from a
        # float64 computation, so the 1e-3 agreement is checked above that floor.
        diff = np.abs(feats - ref)
        above_noise = ref > ref.max(axis=1, keepdims=True) - 18.0
        assert above_noise.mean() > 0.99
        assert diff[above_noise].max() < 1e-3
        assert diff.max() < 2e-2


@pytest.mark.parametrize("options", [
    dict(snip_edges=False),
    dict(window="hamming", use_energy=True, energy_floor=1.0),
    dict(window="blackman", preemphasis=0.0, remove_dc_offset=False, low_freq=100,
         high_freq=-300),
])
def test_logmel_options_equal_torchaudio(speech_data_dir_8k, options):
    audio = utterances(speech_data_dir_8k)[0]
    fbank = LogMel(sample_rate=8000, num_mel_bins=23, **options)
    names = dict(window="window_type", preemphasis="preemphasis_coefficient")
    ref = torchaudio_fbank(audio, 8000, 23, **{names.get(k, k): v for k, v in options.items()})
    feats, frames = fbank(torch.from_numpy(audio))
    assert feats.shape[1:] == ref.shape and int(frames) == len(ref)
    assert (feats[0] - ref).abs().max() < 1e-4


def test_batch_of_different_lengths_equals_single(speech_data_dir_8k):
    fbank = LogMel(sample_rate=8000, num_mel_bins=40)
    audios = utterances(speech_data_dir_8k) + [np.full(150, 0.1, np.float32)]  # < 1 frame
    lengths = torch.tensor([len(a) for a in audios])
    batch = torch.zeros(len(audios), int(lengths.max()))
    for i, a in enumerate(audios):
        batch[i, :len(a)] = torch.from_numpy(a)
    feats, frames = fbank(batch, lengths)
    assert frames.dtype == torch.int64 and frames[-1] == 0
    for i, a in enumerate(audios):
        single = fbank.compute([a])[0]
        assert frames[i] == len(single)
        assert torch.equal(feats[i, :len(single)], single)
        assert not feats[i, len(single):].any()  # padding frames are zero
    assert all(torch.equal(x, y) for x, y in zip(fbank.compute(audios), [
        fbank.compute([a])[0] for a in audios], strict=True))


def test_config_round_trip_and_validation():
    fbank = LogMel(sample_rate=8000, num_mel_bins=40, dither=1.0)
    cfg = fbank.config()
    assert isinstance(cfg, dict) and LogMel(**cfg).config() == cfg
    assert fbank.feature_dim == 40
    with pytest.raises(UserError, match="no FFT bin"):
        LogMel(sample_rate=16000, num_mel_bins=128)
    with pytest.raises(UserError, match="window"):
        LogMel(window="kaiser")


def test_mel_groups_cover_the_banks():
    # The CPU path multiplies by narrow per-group slices of the banks; the GPU path by all.
    for rate, bins in ((8000, 40), (16000, 80), (16000, 23)):
        fbank = LogMel(sample_rate=rate, num_mel_bins=bins)
        rebuilt = torch.zeros_like(fbank.mel_banks)
        col = 0
        for i, (lo, hi) in enumerate(fbank._mel_rows):
            group = getattr(fbank, f"_mel_group{i}")
            rebuilt[lo:hi, col:col + group.shape[1]] = group
            col += group.shape[1]
        assert col == bins and torch.equal(rebuilt, fbank.mel_banks)


def test_dither_is_reproducible_with_a_generator(speech_data_dir_8k):
    audio = torch.from_numpy(utterances(speech_data_dir_8k)[0])
    plain = LogMel(sample_rate=8000, num_mel_bins=40)(audio)[0]
    dithered = LogMel(sample_rate=8000, num_mel_bins=40, dither=1.0)
    a = dithered(audio, generator=torch.Generator().manual_seed(3))[0]
    b = dithered(audio, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b) and not torch.equal(a, plain)
    speech = plain > 5.0  # dither fills digital silence (log(eps) there) but barely moves speech
    assert (a - plain)[speech].abs().mean() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_logmel_on_gpu_matches_cpu(speech_data_dir):
    fbank = LogMel(sample_rate=16000, num_mel_bins=80)
    audios = utterances(speech_data_dir)
    lengths = torch.tensor([len(a) for a in audios])
    batch = torch.zeros(len(audios), int(lengths.max()))
    for i, a in enumerate(audios):
        batch[i, :len(a)] = torch.from_numpy(a)
    cpu, frames = fbank(batch, lengths)
    gpu, gpu_frames = fbank.cuda()(batch.cuda(), lengths.cuda())
    assert gpu.is_cuda and torch.equal(gpu_frames.cpu(), frames)
    # cuFFT rounds differently from pocketfft: as with kaldi-native-fbank, compare above the
    # float32 noise floor tightly and everywhere loosely.
    gpu, diff = gpu.cpu(), (gpu.cpu() - cpu).abs()
    above_noise = cpu > cpu.amax(dim=2, keepdim=True) - 18.0
    for i, n in enumerate(frames.tolist()):
        assert diff[i, :n][above_noise[i, :n]].max() < 1e-3
        assert not gpu[i, n:].any()
    assert diff.max() < 5e-2


# --- CMVN ---------------------------------------------------------------------------------


def test_cmvn_stats_and_module_equal_numpy():
    rng = np.random.default_rng(0)
    feats = [rng.normal(3.0, 2.0, size=(n, 5)).astype(np.float32) for n in (30, 50)]
    stats = cmvn_stats(feats)
    allf = np.concatenate(feats).astype(np.float64)
    assert np.allclose(stats[0, :-1], allf.sum(0)) and stats[0, -1] == 80
    assert np.allclose(stats[1, :-1], (allf ** 2).sum(0))
    cmvn = CMVN.from_stats(stats)
    assert np.allclose(cmvn.mean.numpy(), allf.mean(0), atol=1e-5)
    assert np.allclose(cmvn.std.numpy(), allf.std(0), atol=1e-5)
    assert set(cmvn.state_dict()) == {"mean", "std"}  # a model carries its normalisation
    x = torch.from_numpy(feats[0])
    expected = (feats[0] - allf.mean(0)) / allf.std(0)
    assert np.allclose(cmvn(x).numpy(), expected, atol=1e-5)
    restored = CMVN(**cmvn.config())
    restored.load_state_dict(cmvn.state_dict())
    assert torch.allclose(restored(x), cmvn(x))
    # Padded batch: padding stays zero.
    batch = torch.zeros(2, 50, 5)
    batch[0, :30], batch[1] = x, torch.from_numpy(feats[1])
    out = cmvn(batch, torch.tensor([30, 50]))
    assert torch.allclose(out[0, :30], cmvn(x)) and not out[0, 30:].any()
    mean_only = CMVN.from_stats(stats, norm_vars=False)
    assert np.allclose(mean_only(x).numpy(), feats[0] - allf.mean(0), atol=1e-5)


def test_apply_cmvn_numpy_and_tensor():
    rng = np.random.default_rng(1)
    feats = rng.normal(-2.0, 4.0, size=(40, 3)).astype(np.float32)
    stats = cmvn_stats([feats])
    out = apply_cmvn(feats, stats)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert np.allclose(out, (feats - feats.mean(0)) / feats.std(0, dtype=np.float64), atol=1e-4)
    out_t = apply_cmvn(torch.from_numpy(feats), torch.from_numpy(stats))
    assert isinstance(out_t, torch.Tensor) and np.allclose(out_t.numpy(), out, atol=1e-6)
    assert np.allclose(apply_cmvn(feats, stats, norm_vars=False), feats - feats.mean(0),
                       atol=1e-5)
    with pytest.raises(UserError, match="dimension"):
        apply_cmvn(feats[:, :2], stats)


# --- SpecAugment --------------------------------------------------------------------------


def test_specaugment_masks_stay_within_limits():
    aug = SpecAugment(freq_masks=2, freq_width=5, time_masks=3, time_width=10,
                      time_max_proportion=0.1)
    lengths = torch.tensor([100, 60, 20, 5])
    feats = torch.rand(4, 100, 40) + 1.0  # no zeros before masking
    for seed in range(20):
        out = aug(feats, lengths, generator=torch.Generator().manual_seed(seed))
        masked = out == 0
        for b, n in enumerate(lengths.tolist()):
            cols = masked[b, :n].all(dim=0)            # fully masked frequency bands
            rows = masked[b, :n].all(dim=1)            # fully masked frames
            assert cols.sum() <= 2 * 5
            assert rows.sum() <= 3 * min(10, int(0.1 * n))
            # Every masked value is in a masked band or frame, none in the padding.
            assert torch.equal(masked[b, :n], cols.unsqueeze(0) | rows.unsqueeze(1))
            assert torch.equal(out[b, n:], feats[b, n:])


def test_specaugment_eval_identity_determinism_and_config():
    aug = SpecAugment(time_warp=5)
    feats, lengths = torch.randn(3, 80, 20), torch.tensor([80, 50, 8])
    g = torch.Generator
    a = aug(feats, lengths, generator=g().manual_seed(0))
    b = aug(feats, lengths, generator=g().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, feats)
    aug.eval()
    assert aug(feats, lengths) is feats
    assert SpecAugment(**aug.config()).config() == aug.config()
    with pytest.raises(UserError):
        SpecAugment(time_max_proportion=2.0)


def test_time_warp_keeps_ends_padding_and_short_utterances():
    warp = SpecAugment(freq_masks=0, time_masks=0, time_warp=4)
    t = torch.arange(40, dtype=torch.float32)
    feats = t.view(1, 40, 1).expand(3, 40, 2).clone()  # value = frame index
    lengths = torch.tensor([40, 30, 10])                # 10 < 2W + 3: left alone
    changed = False
    for seed in range(10):
        out = warp(feats, lengths, generator=torch.Generator().manual_seed(seed))
        for b, n in enumerate(lengths.tolist()):
            assert out[b, 0, 0] == 0 and out[b, n - 1, 0] == n - 1  # ends stay in place
            assert torch.all(out[b, 1:n, 0] >= out[b, :n - 1, 0])   # time stays monotonic
            assert torch.equal(out[b, n:], feats[b, n:])
        assert torch.equal(out[2], feats[2])
        changed |= not torch.equal(out[0], feats[0])
    assert changed
