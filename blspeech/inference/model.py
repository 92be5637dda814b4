"""A trained acoustic model ready for inference: loading, data, batched log-probabilities.

:func:`load_acoustic_model` reads a checkpoint written by ``blspeech train`` (keys
``model``, ``model_config``, ``tokenizer``, ``normalizer``, ``frontend``, ``cmvn``,
``data_source``) into an :class:`AcousticModelBundle`: the CTC model in eval mode with
everything needed to feed it exactly as in training. Decoding (:mod:`blspeech.inference.decode`),
forced alignment (:mod:`blspeech.inference.align`) and :func:`forward_data_dir` (log-likelihoods
for Kaldi decoders) all read data dirs through it. Hybrid models without the token
topology have no tokenizer (their pdfs are a Kaldi tree's): they forward, but do not
decode here.

Example:
    >>> am = load_acoustic_model("exp/ctc_bl/best.pt")                  # doctest: +SKIP
    >>> ds = am.dataset("data/test")                                      # doctest: +SKIP
    >>> for batch, log_probs, lengths in am.batches(ds, max_frames=20000):  # doctest: +SKIP
    ...     log_probs.shape                                   # (B, T', vocab)
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from blspeech.devices import resolve_device
from blspeech.errors import UserError

#: Checkpoint keys an acoustic model needs beyond ``model`` and ``model_config``.
REQUIRED_KEYS = ("model", "model_config", "tokenizer", "normalizer", "cmvn", "data_source")
#: Front-end settings that must agree between training features and decoding features.
_FRONTEND_KEYS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms",
                  "use_energy")


@dataclass
class AcousticModelBundle:
    """An acoustic model (CTC or hybrid head) with its tokenizer, text normalizer and
    feature pipeline (``tokenizer``/``normalizer`` are None for a Kaldi-tree hybrid model).

    ``cmvn`` is the normalization mode used in training; for ``global`` the statistics
    come from the checkpoint (the training data's), for ``speaker``/``utterance`` from the
    decoded data dir's ``cmvn.scp``, as Kaldi recipes do.
    """

    model: torch.nn.Module
    tokenizer: Any
    normalizer: Any
    frontend: dict[str, Any]
    cmvn: str
    cmvn_stats: torch.Tensor | None
    norm_vars: bool
    data_source: str
    device: torch.device
    path: str = ""

    def __post_init__(self) -> None:
        from blspeech.frontend.features import CMVN

        #: The training data's global CMVN as a module (None unless ``cmvn`` is global):
        #: the one implementation that training, bundles and chunked inference share.
        self.global_cmvn = (None if self.cmvn_stats is None else
                            CMVN.from_stats(self.cmvn_stats, self.norm_vars).to(self.device))

    @property
    def is_hybrid(self) -> bool:
        return self.model.config.get("head") == "hybrid"

    @property
    def frame_shift(self) -> float:
        """Seconds between feature frames (Kaldi's default 10 ms when not recorded)."""
        return float(self.frontend.get("frame_shift_ms", 10.0)) / 1000.0

    @property
    def frame_seconds(self) -> float:
        """Seconds per model output frame: frame shift x the encoder's time subsampling."""
        return self.frame_shift * int(getattr(self.model, "time_subsampling", 1))

    @property
    def feature_dim(self) -> int | None:
        """The encoder's input dimension, when its config records it."""
        dim = self.model.config.get("encoder", {}).get("num_mel_bins")
        return None if dim is None else int(dim)

    def dataset(self, data_dir: str | os.PathLike, *, transcripts: bool | None = None,
                allow_wavscp_commands: bool | None = None) -> Any:
        """A :class:`~blspeech.data.speech.SpeechDataset` over ``data_dir`` fed as in training.

        ``transcripts=None`` reads ``text`` when the data dir has one. With
        ``allow_wavscp_commands=False`` ``wav.scp`` commands are refused (as
        ``BLSPEECH_NO_WAVSCP_COMMANDS=1`` does).
        """
        from blspeech.data.speech import SpeechDataset

        data_dir = os.fspath(data_dir)
        if not os.path.isdir(data_dir):
            raise UserError(f"data dir {data_dir} does not exist or is not a directory")
        if self.data_source == "feats" and not os.path.isfile(os.path.join(data_dir,
                                                                          "feats.scp")):
            raise UserError(f"{os.path.join(data_dir, 'feats.scp')} not found: the model "
                            f"{self.path} reads precomputed features; compute them with its "
                            f"settings first: 'blspeech compute-feats {data_dir}"
                            f"{self._compute_feats_options()}'")
        if transcripts is None:
            transcripts = os.path.isfile(os.path.join(data_dir, "text"))
        # The dataset applies per-speaker/-utterance stats itself; global stats are the
        # checkpoint's and are applied to each batch (see log_probs).
        ds_cmvn = self.cmvn if self.cmvn in ("speaker", "utterance") else "none"
        ds = SpeechDataset(data_dir, source=self.data_source,
                           # No recorded front-end: the data dir's conf/fbank.yaml.
                           frontend=(self.frontend or None) if self.data_source == "audio"
                           else None,
                           cmvn=ds_cmvn, norm_vars=self.norm_vars, transcripts=transcripts,
                           allow_commands=allow_wavscp_commands)
        want = self.feature_dim
        if want is not None and len(ds) and ds.feat_dim != want:
            if self.data_source == "audio":
                raise UserError(f"{self.path}: its front-end gives {ds.feat_dim} features but "
                                f"the model expects {want}; the checkpoint is inconsistent")
            raise UserError(f"{data_dir}: features have dimension {ds.feat_dim} but the model "
                            f"{self.path} expects {want}; recompute them with the model's "
                            f"settings ('blspeech compute-feats{self._compute_feats_options()}')")
        if self.data_source == "feats":
            self._check_feats_config(data_dir)
        return ds

    def _compute_feats_options(self) -> str:
        opts = ""
        if "sample_rate" in self.frontend:
            opts += f" --sample-rate {self.frontend['sample_rate']}"
        if "num_mel_bins" in self.frontend:
            opts += f" --num-mel-bins {self.frontend['num_mel_bins']}"
        return opts

    def _check_feats_config(self, data_dir: str) -> None:
        """Warn when the data dir's features were computed with other settings."""
        from blspeech.frontend.extract import FBANK_CONF, load_frontend_config

        conf = os.path.join(data_dir, FBANK_CONF)
        if not self.frontend or not os.path.isfile(conf):
            return
        theirs = load_frontend_config(conf)
        differ = [k for k in _FRONTEND_KEYS
                  if k in theirs and k in self.frontend and theirs[k] != self.frontend[k]]
        if differ:
            shown = ", ".join(f"{k}={theirs[k]} (model: {self.frontend[k]})" for k in differ)
            warnings.warn(f"{conf}: features were computed with {shown}; the model will see "
                          "features unlike its training data", stacklevel=3)

    def log_probs(self, feats: torch.Tensor, lengths: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, F)`` features -> the model's log-probabilities ``(B, T', V)`` float32 (CTC
        tokens or hybrid pdf posteriors) and lengths.

        Applies global CMVN (padded frames stay 0, as in training) and runs the model
        without gradients, on the bundle's device.
        """
        feats = feats.to(self.device, non_blocking=True)
        lengths = lengths.to(self.device)
        if self.global_cmvn is not None:
            feats = self.global_cmvn(feats, lengths)
        with torch.inference_mode():
            log_probs, out_lengths = self.model(feats, lengths)
        return log_probs.float(), out_lengths

    def batches(self, dataset: Any, *, max_frames: int = 20000, num_workers: int = 0,
                progress: bool = False, desc: str = "decode"
                ) -> Iterator[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
        """``(batch, log_probs, out_lengths)`` over ``dataset`` in length-sorted batches
        of at most ``max_frames`` padded feature frames (``tqdm`` bar with ``progress``)."""
        from tqdm import tqdm

        from blspeech.data.speech import BucketingBatchSampler, make_dataloader

        if max_frames <= 0:
            raise UserError(f"max_frames must be positive, got {max_frames}")
        # One bucket, unshuffled: batches of neighbours in length order, least padding.
        sampler = BucketingBatchSampler(dataset.lengths, max_frames, shuffle=False,
                                        num_replicas=1, rank=0, buckets=1)
        loader = make_dataloader(dataset, sampler, num_workers=num_workers)
        with tqdm(total=len(dataset), unit="utt", desc=desc, disable=not progress,
                  file=sys.stderr, leave=False) as bar:
            for batch in _user_errors_from_workers(loader):
                try:
                    log_probs, out_lengths = self.log_probs(batch["feats"], batch["lengths"])
                except RuntimeError as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    utts = ", ".join(batch["utts"][:3]) + (", ..." if len(batch["utts"]) > 3
                                                           else "")
                    raise UserError(f"the model failed on utterance(s) {utts} (frames "
                                    f"{batch['lengths'].tolist()[:3]}): {first}") from e
                yield batch, log_probs, out_lengths
                bar.update(len(batch["utts"]))


def _user_errors_from_workers(loader: Any) -> Iterator[dict[str, Any]]:
    """Iterate ``loader``; a UserError raised in a worker process keeps its one-line
    message (DataLoader wraps it in the worker's traceback)."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except UserError as e:
            text = str(e).strip()
            if "Original Traceback" not in text:
                raise
            last = text.splitlines()[-1]
            raise UserError(re.sub(r"^[\w.]+: ", "", last, count=1)) from e
        yield batch


def load_acoustic_model(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                        fuse_bn: bool = True) -> AcousticModelBundle:
    """Read an acoustic-model checkpoint; the model is in eval mode on ``device``.

    With ``fuse_bn`` every BatchNorm that directly follows a convolution is folded into it
    and 2-D convolution weights are stored channels-last (:func:`blspeech.models.fuse`):
    the same outputs up to float rounding, one pass over each feature map less, and
    oneDNN's faster NHWC kernels on CPU (greedy decoding of telephony_mini's test_synth with
    resnet_am_mini: 0.83 s, against 1.08 s with BN folded alone). The model is then for
    inference only.

    Raises UserError (one line naming the file) for a missing, corrupt or foreign file,
    missing keys, weights that do not fit the recorded model config, a tokenizer whose
    vocabulary size differs from the model's output size, and bad CMVN or front-end
    entries.

    Example:
        >>> am = load_acoustic_model("exp/ctc/best.pt")          # doctest: +SKIP
        >>> am.tokenizer.vocab_size == am.model.vocab_size        # doctest: +SKIP
        True
    """
    path = os.fspath(path)
    dev = resolve_device(device)
    ckpt = _read_checkpoint(path)
    model = _rebuild_model(ckpt, path)
    tokenizer, normalizer = _read_text_entries(ckpt, model, path)
    frontend, source = _read_frontend(ckpt, path)
    mode, stats, norm_vars = _read_cmvn(ckpt["cmvn"], path)
    dim = model.config.get("encoder", {}).get("num_mel_bins")
    if stats is not None and dim is not None and stats.shape[1] - 1 != int(dim):
        raise _bad(path, "bad cmvn", f"stats have dimension {stats.shape[1] - 1} but the "
                                     f"model takes {dim} features")
    model.eval()
    if fuse_bn:
        model = fused_for_inference(model)
    model.to(dev)
    return AcousticModelBundle(model=model, tokenizer=tokenizer, normalizer=normalizer,
                               frontend=frontend, cmvn=mode, cmvn_stats=stats,
                               norm_vars=norm_vars, data_source=source, device=dev, path=path)


def _bad(path: str, what: str, e: BaseException | str) -> UserError:
    """One line naming the checkpoint, the entry and the first line of the cause."""
    text = e if isinstance(e, str) else (str(e).strip().splitlines() or [type(e).__name__])[0]
    return UserError(f"{path}: {what}: {text}")


def _read_checkpoint(path: str) -> dict[str, Any]:
    from blspeech.io.checkpoint import load_checkpoint

    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a directory; pass a checkpoint file such as "
                        f"{os.path.join(path, 'best.pt')}")
    try:
        ckpt = load_checkpoint(path)
    except ValueError as e:
        raise UserError(str(e)) from e
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path} is not an acoustic-model checkpoint: it has no "
                        f"{', '.join(repr(k) for k in missing)} (checkpoints written by "
                        "'blspeech train' have them)")
    return ckpt


def _rebuild_model(ckpt: Mapping[str, Any], path: str) -> torch.nn.Module:
    from blspeech.models.asr import acoustic_model_from_config

    if not isinstance(ckpt["model_config"], Mapping):
        raise _bad(path, "bad model_config", "expected a dict")
    try:
        model = acoustic_model_from_config(dict(ckpt["model_config"]))
    except (ValueError, KeyError, TypeError) as e:
        raise _bad(path, "cannot rebuild the model from model_config", e) from e
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise _bad(path, "the weights do not fit the model config", e) from e
    return model


def _read_text_entries(ckpt: Mapping[str, Any], model: torch.nn.Module, path: str
                       ) -> tuple[Any, Any]:
    """The tokenizer and text normalizer (None, None for a Kaldi-tree hybrid model)."""
    from blspeech.decoding.hybrid import token_topology_pdfs
    from blspeech.text.tokenizers import TextNormalizer, tokenizer_from_dict

    hybrid = model.config["head"] == "hybrid"
    if ckpt["tokenizer"] is None:
        if not hybrid or model.topology is not None:
            raise _bad(path, "bad tokenizer entry", "none recorded, but the model outputs tokens")
        return None, None
    try:
        tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    except UserError as e:
        raise _bad(path, "bad tokenizer", e) from e
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(path, "bad tokenizer entry", repr(e)) from e
    outputs = model.num_pdfs if hybrid else model.vocab_size
    wanted = token_topology_pdfs(tokenizer.vocab_size) if hybrid else tokenizer.vocab_size
    if hybrid and model.topology is None:
        wanted = outputs  # a Kaldi-tree model may carry a tokenizer for its transcripts
    if wanted != outputs:
        raise UserError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                        f"model outputs {outputs}{' pdfs' if hybrid else ''}; the "
                        "checkpoint mixes a model and a tokenizer that were not trained "
                        "together")
    try:
        normalizer = TextNormalizer(**dict(ckpt["normalizer"] or {}))
    except (TypeError, ValueError) as e:
        raise _bad(path, "bad normalizer", e) from e
    return tokenizer, normalizer


def _read_frontend(ckpt: Mapping[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The recorded LogMel options and the data source (``feats`` or ``audio``)."""
    frontend = ckpt.get("frontend") or {}
    if not isinstance(frontend, Mapping):
        raise _bad(path, "bad frontend", "expected a dict of LogMel options")
    frontend = dict(frontend)
    source = ckpt["data_source"]
    if source not in ("feats", "audio"):
        raise _bad(path, "bad data_source", f"expected 'feats' or 'audio', got {source!r}")
    if source == "audio" and frontend:
        from blspeech.frontend.features import LogMel

        try:
            LogMel(**frontend)
        except (TypeError, ValueError) as e:
            raise _bad(path, "bad frontend", e) from e
    return frontend, source


def fused_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The inference copy :func:`load_acoustic_model` uses with ``fuse_bn``: BatchNorms
    folded into their convolutions, 2-D weights channels-last, no gradients."""
    from blspeech.models import fuse

    return fuse(model, channels_last=True)


def _read_cmvn(entry: Any, path: str) -> tuple[str, torch.Tensor | None, bool]:
    from blspeech.data.speech import CMVN_MODES

    if not isinstance(entry, Mapping) or entry.get("mode") not in CMVN_MODES:
        raise UserError(f"{path}: bad cmvn entry: expected {{'mode': one of "
                        f"{', '.join(CMVN_MODES)}, 'stats': ...}}, got {entry!r:.80}")
    mode, norm_vars = entry["mode"], bool(entry.get("norm_vars", True))
    if mode != "global":
        return mode, None, norm_vars
    stats = entry.get("stats")
    if not isinstance(stats, torch.Tensor) or stats.dim() != 2 or stats.shape[0] != 2 \
            or stats.shape[1] < 2:
        raise UserError(f"{path}: cmvn mode 'global' needs 'stats', a 2 x (dim+1) tensor of "
                        "Kaldi statistics")
    stats = stats.detach().to("cpu", torch.float64)
    if not torch.isfinite(stats).all() or stats[0, -1] <= 0:
        raise UserError(f"{path}: the global CMVN statistics are not finite or count no frames")
    return mode, stats, norm_vars


__all__ = ["AcousticModelBundle", "load_acoustic_model", "resolve_device"]
