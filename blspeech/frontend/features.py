"""Front-end modules: Kaldi-compatible log mel filterbank, CMVN and SpecAugment.

All three are ``nn.Module`` s that work on padded batches with per-utterance lengths, on
the CPU or a GPU, and rebuild from the plain dict that ``config()`` returns.

Example:
    >>> fbank = LogMel(sample_rate=8000, num_mel_bins=40)
    >>> feats, frames = fbank(torch.zeros(2, 8000), torch.tensor([8000, 4000]))
    >>> feats.shape, frames.tolist()
    (torch.Size([2, 98, 40]), [98, 48])
    >>> LogMel(**fbank.config()).config() == fbank.config()
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi_fbank
from torch import Tensor, nn

from blspeech.errors import UserError
from blspeech.io.kaldi import cmvn_from_stats, read_matrix, read_table

_EPS = torch.finfo(torch.float32).eps  # Kaldi's log floor (std::numeric_limits<float>)
_CPU_CHUNK = 512  # frames per block on the CPU (see LogMel._frames_to_feats)
_WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman")


class LogMel(nn.Module):
    """Log mel filterbank equal to Kaldi's ``compute-fbank-feats`` (and torchaudio's ``fbank``).

    ``forward(wave, lengths)`` takes float samples in [-1, 1] (``wave`` of shape ``(B, N)``,
    ``lengths`` the valid samples of each row) and returns ``(feats, frames)``: ``feats`` of
    shape ``(B, T, num_mel_bins)`` float32 with frames past each utterance's end set to 0,
    and ``frames`` (int64) the valid frame counts. ``scale`` (32768) brings the samples to
    Kaldi's int16 range, so the numbers equal Kaldi's for 16-bit audio. ``dither`` adds
    Gaussian noise of that standard deviation (in the scaled range) to each frame, as Kaldi
    does; pass ``generator`` to ``forward`` for reproducible noise. With ``use_energy`` the
    log frame energy (floored at ``energy_floor``, if > 0) comes first, as in Kaldi.

    Example:
        >>> fbank = LogMel(sample_rate=16000, num_mel_bins=80)
        >>> feats, frames = fbank(torch.randn(3, 16000) * 0.1, torch.tensor([16000, 8000, 400]))
        >>> frames.tolist()
        [98, 48, 1]
    """

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 80,
                 frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                 dither: float = 0.0, preemphasis: float = 0.97, remove_dc_offset: bool = True,
                 window: str = "povey", low_freq: float = 20.0, high_freq: float = 0.0,
                 snip_edges: bool = True, energy_floor: float = 0.0, scale: float = 32768.0,
                 use_energy: bool = False) -> None:
        super().__init__()
        self._config = dict(
            sample_rate=int(sample_rate), num_mel_bins=int(num_mel_bins),
            frame_length_ms=float(frame_length_ms), frame_shift_ms=float(frame_shift_ms),
            dither=float(dither), preemphasis=float(preemphasis),
            remove_dc_offset=bool(remove_dc_offset), window=str(window),
            low_freq=float(low_freq), high_freq=float(high_freq), snip_edges=bool(snip_edges),
            energy_floor=float(energy_floor), scale=float(scale), use_energy=bool(use_energy))
        # Same integer truncation as Kaldi (e.g. 8 kHz x 25 ms = 200 samples).
        self.win = int(sample_rate * frame_length_ms * 0.001)
        self.shift = int(sample_rate * frame_shift_ms * 0.001)
        if window not in _WINDOWS:
            raise UserError(f"LogMel: window must be one of {', '.join(_WINDOWS)}, got {window!r}")
        if self.win < 2 or self.shift < 1:
            raise UserError(f"LogMel: frame length {frame_length_ms} ms / shift {frame_shift_ms}"
                            f" ms give {self.win} / {self.shift} samples at {sample_rate} Hz")
        if not 0.0 <= preemphasis <= 1.0:
            raise UserError(f"LogMel: preemphasis must be in [0, 1], got {preemphasis}")
        self.n_fft = 1 << (self.win - 1).bit_length()  # next power of two, as Kaldi pads
        nyquist = sample_rate / 2
        high = high_freq if high_freq > 0 else nyquist + high_freq
        if num_mel_bins < 4 or not 0 <= low_freq < high <= nyquist:
            raise UserError(f"LogMel: need num_mel_bins >= 4 and 0 <= low_freq < high_freq <= "
                            f"{nyquist:g} Hz (Nyquist); got {num_mel_bins} bins, low_freq "
                            f"{low_freq:g}, high_freq {high_freq:g}")
        banks, _ = kaldi_fbank.get_mel_banks(num_mel_bins, self.n_fft, float(sample_rate),
                                             low_freq, high_freq, 100.0, -500.0, 1.0)
        empty = (banks.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise UserError(f"LogMel: mel bin(s) {empty} get no FFT bin at {sample_rate} Hz with "
                            f"a {self.n_fft}-point FFT; use fewer than {num_mel_bins} mel bins")
        # No weight on the Nyquist bin, as in Kaldi. Stored as (2 * fft bins, F) with each
        # row repeated, to multiply the interleaved (re^2, im^2) spectrum directly.
        banks = torch.nn.functional.pad(banks.float(), (0, 1))
        banks = banks.T.repeat_interleave(2, dim=0).contiguous()
        self.register_buffer("mel_banks", banks, persistent=False)
        self._mel_rows = []
        groups = 3 if num_mel_bins >= 24 else 1
        for i in range(groups):
            cols = slice(i * num_mel_bins // groups, (i + 1) * num_mel_bins // groups)
            rows = (banks[:, cols] != 0).any(dim=1).nonzero().flatten()
            lo, hi = (int(rows.min()), int(rows.max()) + 1) if len(rows) else (0, 1)
            self._mel_rows.append((lo, hi))
            self.register_buffer(f"_mel_group{i}", banks[lo:hi, cols].contiguous(),
                                 persistent=False)
        # Multiplying by a power of two is exact, so without dither or energy the scale can
        # ride on the window (one pass less) with bitwise the same result.
        self._scale_in_window = (math.frexp(scale)[0] == 0.5 and dither == 0
                                 and not use_energy)
        win_fn = _window(window, self.win)
        self.register_buffer("window", win_fn * scale if self._scale_in_window else win_fn,
                             persistent=False)

    def config(self) -> dict[str, Any]:
        """Plain dict of the constructor arguments: ``LogMel(**cfg)`` rebuilds this module."""
        return dict(self._config)

    @property
    def sample_rate(self) -> int:
        return self._config["sample_rate"]

    @property
    def feature_dim(self) -> int:
        return self._config["num_mel_bins"] + int(self._config["use_energy"])

    def num_frames(self, lengths: Tensor | int) -> Tensor | int:
        """Frames Kaldi produces for ``lengths`` samples (elementwise for a tensor)."""
        if self._config["snip_edges"]:
            if isinstance(lengths, Tensor):
                return torch.where(lengths >= self.win, (lengths - self.win) // self.shift + 1, 0)
            return (lengths - self.win) // self.shift + 1 if lengths >= self.win else 0
        return (lengths + self.shift // 2) // self.shift

    def forward(self, wave: Tensor, lengths: Tensor | None = None, *,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``wave`` (B, N) or (N,) in [-1, 1], ``lengths`` (B,) -> (feats (B, T, F), frames)."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        batch, n = wave.shape
        if lengths is None:
            lengths = torch.full((batch,), n, dtype=torch.long)
        lengths = torch.as_tensor(lengths, device=wave.device).long().clamp(max=n)
        frames = self.num_frames(lengths)
        t_max = int(frames.max()) if batch else 0
        out = wave.new_zeros((batch, t_max, self.feature_dim), dtype=torch.float32)
        if t_max == 0:
            return out, frames
        if wave.device.type == "cpu" and self._config["snip_edges"]:
            # Per-row slices and copies beat boolean-mask gather/scatter on the CPU.
            counts = frames.tolist()
            rows = [w[:size] for w, size in zip(wave, lengths.tolist(), strict=True)]
            feats, _ = self.compute_flat(rows, generator=generator)
            for b, piece in enumerate(torch.split(feats, counts)):
                out[b, :counts[b]] = piece
            return out, frames
        valid = torch.arange(t_max, device=wave.device) < frames.unsqueeze(1)  # (B, T)
        if self._config["snip_edges"]:
            # (B, T, win) view; only the valid frames are copied (no work on padding).
            strided = wave.float().unfold(1, self.win, self.shift)[:, :t_max]
            framed = strided[valid]
        else:
            framed = self._reflected_frames(wave.float(), lengths, t_max)[valid]
        out[valid] = self._frames_to_feats(framed, generator)
        return out, frames

    def compute(self, waves: Sequence[Tensor | np.ndarray], *,
                generator: torch.Generator | None = None) -> list[Tensor]:
        """Features of several 1-D waveforms of any lengths, in one batched pass, no padding.

        Returns one ``(T_i, F)`` tensor per waveform (T_i may be 0 for very short input).
        """
        feats, counts = self.compute_flat(waves, generator=generator)
        return list(torch.split(feats, counts))

    def compute_flat(self, waves: Sequence[Tensor | np.ndarray], *,
                     generator: torch.Generator | None = None) -> tuple[Tensor, list[int]]:
        """Like :meth:`compute` but returns all frames stacked, ``(sum T_i, F)``, and the T_i."""
        waves = [torch.as_tensor(w, device=self.window.device).float() for w in waves]
        if not self._config["snip_edges"]:
            feats = [self(w.unsqueeze(0), generator=generator)[0][0] for w in waves]
            return torch.cat(feats), [len(f) for f in feats]
        counts = [int(self.num_frames(len(w))) for w in waves]
        pieces = [w.unfold(0, self.win, self.shift) for w, c in zip(waves, counts, strict=True)
                  if c]
        if not pieces:
            return self.window.new_zeros((0, self.feature_dim)), counts
        return self._frames_to_feats(torch.cat(pieces), generator), counts

    def _reflected_frames(self, wave: Tensor, lengths: Tensor, t_max: int) -> Tensor:
        # snip_edges=False: frame t is centred at t*shift + shift/2, samples outside the
        # signal are mirrored (x[-1] = x[0], x[n] = x[n-1]), as Kaldi does.
        first = self.shift // 2 - self.win // 2
        idx = (torch.arange(t_max, device=wave.device) * self.shift).unsqueeze(1) \
            + torch.arange(self.win, device=wave.device) + first           # (T, win)
        idx = idx.unsqueeze(0).expand(wave.shape[0], -1, -1)
        n = lengths.clamp(min=1).view(-1, 1, 1)
        idx = torch.where(idx < 0, -idx - 1, idx)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx).clamp(min=0)
        flat = idx.reshape(wave.shape[0], -1)
        return torch.gather(wave, 1, flat).view(wave.shape[0], t_max, self.win)

    def _frames_to_feats(self, frames: Tensor, generator: torch.Generator | None) -> Tensor:
        """(M, win) frames in [-1, 1] -> (M, F) log mel features.

        ``frames`` must be a private copy (it is changed in place).
        """
        if frames.device.type != "cpu" or len(frames) <= _CPU_CHUNK:
            return self._chunk_to_feats(frames, generator)
        # On the CPU, blocks of a few hundred frames stay in cache (2-3x faster than one pass).
        return torch.cat([self._chunk_to_feats(frames[i:i + _CPU_CHUNK], generator)
                          for i in range(0, len(frames), _CPU_CHUNK)])

    def _chunk_to_feats(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        # Each float operation below is the one torchaudio's fbank does, in the same order:
        # bins far below a frame's peak sit at float32 rounding level after the FFT, so any
        # reordering up to the FFT would show as ~3e-4 differences in those log energies.
        # (Scaling by a power of two is exact, so it may move: see _scale_in_window.)
        cfg, win, m = self._config, self.win, x.shape[0]  # not len(x): traceable
        if not self._scale_in_window:
            x *= cfg["scale"]
        if cfg["dither"] > 0:
            where = x.device if generator is None else generator.device
            x += torch.randn(x.shape, generator=generator, device=where).to(x.device) \
                * cfg["dither"]
        if cfg["remove_dc_offset"]:
            x -= x.mean(dim=1, keepdim=True)
        if cfg["use_energy"]:  # Kaldi's raw energy: after DC removal, before pre-emphasis
            energy = x.square().sum(dim=1).clamp_min(_EPS).log()
            if cfg["energy_floor"] > 0:
                energy = energy.clamp_min(math.log(cfg["energy_floor"]))
        # Zero-padded FFT input, filled in place (pre-emphasis writes straight into it).
        padded = x.new_empty((m, self.n_fft))
        padded[:, win:] = 0.0
        c = cfg["preemphasis"]
        if c != 0.0:
            # x[j] - c * x[j-1], with x[-1] taken as x[0] (Kaldi replicates the first sample).
            torch.sub(x[:, 1:], x[:, :-1] * c, out=padded[:, 1:win])
            padded[:, 0] = x[:, 0] - x[:, 0] * c
        else:
            padded[:, :win] = x
        padded[:, :win] *= self.window
        spectrum = torch.view_as_real(torch.fft.rfft(padded))        # (M, bins, 2)
        # |X|^2 summed into mel bins by matmul: re^2 and im^2 share each bank weight.
        power = torch.mul(spectrum, spectrum).view(m, -1)
        if x.device.type == "cpu":
            # Each group of neighbouring banks only sees a band of FFT bins: a few narrow
            # matmuls do 40-50% less work than one over all bins.
            feats = torch.cat([power[:, lo:hi] @ getattr(self, f"_mel_group{i}")
                               for i, (lo, hi) in enumerate(self._mel_rows)], dim=1)
        else:
            feats = power @ self.mel_banks
        feats = feats.clamp_min_(_EPS).log_()
        if cfg["use_energy"]:
            feats = torch.cat([energy.unsqueeze(1), feats], dim=1)
        return feats


def _window(kind: str, size: int) -> Tensor:
    # float32 formulas as in torchaudio (bitwise equal windows keep results equal to it).
    if kind == "rectangular":
        return torch.ones(size)
    if kind == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, dtype=torch.float32)
        return 0.42 - 0.5 * torch.cos(a * n) + (0.5 - 0.42) * torch.cos(2 * a * n)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    hann = torch.hann_window(size, periodic=False)
    return hann.pow(0.85) if kind == "povey" else hann  # povey: Kaldi's flatter Hann


# --- CMVN ---------------------------------------------------------------------------------


class CMVN(nn.Module):
    """Global mean (and variance) normalisation with the statistics kept as buffers.

    A model that owns a ``CMVN`` carries its normalisation in its state dict. Build it from
    Kaldi stats (``blspeech compute-cmvn`` writes ``global_cmvn``) with :meth:`from_stats`.

    Example:
        >>> stats = np.array([[2.0, 4.0, 2.0], [4.0, 16.0, 0.0]])   # 2 frames, dim 2
        >>> cmvn = CMVN.from_stats(stats)
        >>> cmvn.mean.tolist(), cmvn.std.tolist()
        ([1.0, 2.0], [1.0, 2.0])
    """

    def __init__(self, dim: int, norm_vars: bool = True) -> None:
        super().__init__()
        self.dim, self.norm_vars = int(dim), bool(norm_vars)
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))

    @classmethod
    def from_stats(cls, kaldi_stats: np.ndarray | Tensor, norm_vars: bool = True) -> CMVN:
        """From a Kaldi 2 x (dim+1) stats matrix (sums, sums of squares, frame count)."""
        mean, std = cmvn_from_stats(_numpy(kaldi_stats))
        module = cls(len(mean), norm_vars)
        module.mean.copy_(torch.from_numpy(mean))
        module.std.copy_(torch.from_numpy(std))
        return module

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "norm_vars": self.norm_vars}

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Normalise ``(..., T, dim)`` features; with ``lengths``, padded frames stay 0."""
        out = feats - self.mean
        if self.norm_vars:
            out = out / self.std
        if lengths is not None and feats.dim() == 3:
            valid = torch.arange(feats.shape[1], device=feats.device) < lengths.to(
                feats.device).unsqueeze(1)
            out = out * valid.unsqueeze(-1)
        return out


class Normalize(nn.Module):
    """CMVN of a trained model at inference on a padded batch: the training data's global
    statistics (``cmvn``, a :class:`CMVN`), nothing (``mode`` none), or each utterance's own
    statistics (models trained with per-speaker or per-utterance CMVN: a speaker's stats are
    not known for one recording). Padded frames stay 0. Tensor ops only, so
    :mod:`blspeech.inference.export` traces it as it is."""

    def __init__(self, mode: str, cmvn: nn.Module | None, norm_vars: bool) -> None:
        super().__init__()
        self.mode = mode
        self.cmvn = cmvn
        self.norm_vars = bool(norm_vars)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        if self.cmvn is not None:
            return self.cmvn(feats, lengths)
        valid = torch.arange(feats.shape[1], device=feats.device)[None] < lengths[:, None]
        if self.mode == "none":
            return feats * valid[..., None]
        w = valid[..., None].to(feats.dtype)
        n = w.sum(1, keepdim=True).clamp(min=1)
        mean = (feats * w).sum(1, keepdim=True) / n
        out = feats - mean
        if self.norm_vars:
            var = ((out * w) ** 2).sum(1, keepdim=True) / n
            out = out / var.clamp(min=1e-20).sqrt()
        return out * w


def apply_cmvn(feats: np.ndarray | Tensor, stats: np.ndarray | Tensor,
               norm_vars: bool = True) -> np.ndarray | Tensor:
    """Normalise one utterance's ``(T, dim)`` features with Kaldi stats (like ``apply-cmvn``).

    Returns the same type (numpy array or tensor, same dtype) that came in.

    Example:
        >>> feats = np.array([[0.0, 2.0], [2.0, 6.0]], dtype=np.float32)
        >>> apply_cmvn(feats, np.array([[2.0, 8.0, 2.0], [4.0, 40.0, 0.0]])).tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
    """
    mean, std = cmvn_from_stats(_numpy(stats))
    if mean.shape[0] != feats.shape[-1]:
        raise UserError(f"CMVN stats have dimension {mean.shape[0]} but the features have "
                        f"{feats.shape[-1]}")
    if isinstance(feats, Tensor):
        m = torch.as_tensor(mean, dtype=feats.dtype, device=feats.device)
        out = feats - m
        return out / torch.as_tensor(std, dtype=feats.dtype, device=feats.device) \
            if norm_vars else out
    # Double precision, then the input's dtype (as Kaldi's apply-cmvn and the datasets).
    out = feats - mean
    if norm_vars:
        out = out / std
    return out.astype(feats.dtype, copy=False)


def load_cmvn_stats(data_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{utterance: stats}`` from a data dir's ``cmvn.scp`` (per-speaker or per-utterance).

    Keys of ``cmvn.scp`` that are utterance ids are used directly; otherwise an utterance
    gets its speaker's stats through ``utt2spk``. Use with :func:`apply_cmvn`.

    Example:
        >>> stats = load_cmvn_stats("data/train")                      # doctest: +SKIP
        >>> normed = apply_cmvn(feats, stats["spk0-utt000"])           # doctest: +SKIP
    """
    data_dir = Path(data_dir)
    scp = read_table(data_dir / "cmvn.scp", check_sorted=False)
    utt2spk = {u: e.value for u, e in read_table(data_dir / "utt2spk").items()}
    cache: dict[str, np.ndarray] = {}
    out = {}
    for utt, spk in utt2spk.items():
        key = utt if utt in scp else spk
        if key not in scp:
            raise UserError(f"{data_dir / 'cmvn.scp'}: no statistics for utterance {utt!r} or "
                            f"its speaker {spk!r}; rerun 'blspeech compute-cmvn'")
        if key not in cache:
            cache[key] = read_matrix(scp[key].value)
        out[utt] = cache[key]
    return out


def _numpy(x: np.ndarray | Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


# --- SpecAugment --------------------------------------------------------------------------


class SpecAugment(nn.Module):
    """SpecAugment (Park et al., 2019) on padded ``(B, T, F)`` batches; identity in eval mode.

    Each utterance gets ``freq_masks`` bands of width 0..``freq_width`` set to
    ``mask_value`` and ``time_masks`` spans of width 0..min(``time_width``,
    ``time_max_proportion`` x its length), drawn within its own length; padding frames are
    returned unchanged. ``time_warp`` W > 0 moves a random frame by up to W frames and
    stretches both sides to fit (linear interpolation; the ends stay in place; utterances
    shorter than 2W + 3 frames are not warped). Pass a ``torch.Generator`` to ``forward``
    for reproducible masks.

    Example:
        >>> aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=20)
        >>> out = aug(torch.randn(4, 100, 40), torch.tensor([100, 80, 60, 30]))
        >>> SpecAugment(**aug.config()).config() == aug.config()
        True
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 2,
                 time_width: int = 40, time_max_proportion: float = 0.2, time_warp: int = 0,
                 mask_value: float = 0.0) -> None:
        super().__init__()
        if min(freq_masks, freq_width, time_masks, time_width, time_warp) < 0 or \
                not 0.0 <= time_max_proportion <= 1.0:
            raise UserError("SpecAugment: counts and widths must be >= 0 and "
                            "time_max_proportion in [0, 1]")
        self._config = dict(freq_masks=int(freq_masks), freq_width=int(freq_width),
                            time_masks=int(time_masks), time_width=int(time_width),
                            time_max_proportion=float(time_max_proportion),
                            time_warp=int(time_warp), mask_value=float(mask_value))

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, feats: Tensor, lengths: Tensor | None = None, *,
                generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return feats
        cfg = self._config
        batch, t_max, dim = feats.shape
        if lengths is None:
            lengths = torch.full((batch,), t_max, dtype=torch.long)
        # Random numbers are drawn on the CPU (cheap, and a CPU generator works for any device).
        lens = torch.as_tensor(lengths).long().cpu().clamp(max=t_max)
        if cfg["time_warp"] > 0:
            feats = self._warp(feats, lens, generator)
        # Masks are built where the features are; only the few draws travel there.
        device = feats.device
        mask = torch.zeros(batch, t_max, dim, dtype=torch.bool, device=device)
        n_f, n_t = cfg["freq_masks"], cfg["time_masks"]
        if n_f and cfg["freq_width"]:
            width = _randint(torch.full((batch, n_f), min(cfg["freq_width"], dim)), generator)
            start = _randint(dim - width, generator)
            band = _spans(start.to(device), width.to(device), dim)        # (B, n_f, F)
            mask |= band.any(dim=1).unsqueeze(1)
        if n_t and cfg["time_width"]:
            limit = torch.minimum(torch.full((batch,), cfg["time_width"]),
                                  (lens.double() * cfg["time_max_proportion"]).long())
            width = _randint(limit.unsqueeze(1).expand(batch, n_t), generator)
            start = _randint((lens.unsqueeze(1) - width).clamp(min=0), generator)
            span = _spans(start.to(device), width.to(device), t_max)      # (B, n_t, T)
            mask |= span.any(dim=1).unsqueeze(2)
        padding = torch.arange(t_max, device=device) >= lens.to(device).unsqueeze(1)
        mask &= ~padding.unsqueeze(2)  # padding frames come back as they were
        return feats.masked_fill(mask, cfg["mask_value"])

    def _warp(self, feats: Tensor, lens: Tensor, generator: torch.Generator | None) -> Tensor:
        # Move frame c (drawn in [W + 1, len - W - 2]) to c + w (w in [-W, W]), so both ends
        # stay in place, and stretch both sides linearly, reading between frames by linear
        # interpolation. Utterances shorter than 2W + 3 frames, and the padding of every
        # utterance, are left alone.
        warp = self._config["time_warp"]
        batch, t_max, dim = feats.shape
        ok = lens >= 2 * warp + 3
        centre = warp + 1 + _randint((lens - 2 * warp - 3).clamp(min=0), generator)
        shift = _randint(torch.full((batch,), 2 * warp), generator) - warp
        shift = torch.where(ok, shift, torch.zeros_like(shift))
        c, new_c = centre.double().unsqueeze(1), (centre + shift).double().unsqueeze(1)
        last = (lens.double() - 1).clamp(min=0).unsqueeze(1)
        t = torch.arange(t_max, dtype=torch.float64).unsqueeze(0)
        left = t * c / new_c.clamp(min=1)
        right = c + (t - new_c) * (last - c) / (last - new_c).clamp(min=1)
        src = torch.where(t < new_c, left, right).clamp(min=0)
        src = torch.minimum(src, last)
        src = torch.where(ok.unsqueeze(1) & (t <= last), src, t)
        lo = src.floor().long().clamp(max=t_max - 1)
        hi = (lo + 1).clamp(max=t_max - 1)
        frac = (src - lo.double()).unsqueeze(-1).to(feats.device, feats.dtype)
        lo, hi = (i.to(feats.device).unsqueeze(-1).expand(-1, -1, dim) for i in (lo, hi))
        a, b = torch.gather(feats, 1, lo), torch.gather(feats, 1, hi)
        return a + (b - a) * frac


def _randint(high: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform integers in [0, high], elementwise (``high`` >= 0, on the CPU)."""
    r = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((r * (high + 1)).long(), high)


def _spans(start: Tensor, width: Tensor, size: int) -> Tensor:
    """Boolean (..., size): True in [start, start + width) along the last axis."""
    idx = torch.arange(size, device=start.device)
    return (idx >= start.unsqueeze(-1)) & (idx < (start + width).unsqueeze(-1))


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` updated with ``override``; unknown keys are a :class:`UserError`."""
    out = dict(base)
    for key, value in (override or {}).items():
        if key not in out:
            raise UserError(f"unknown front-end option {key!r}; known: {', '.join(sorted(out))}")
        out[key] = value
    return out
