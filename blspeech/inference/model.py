"""A trained acoustic model ready for inference: :class:`Bundle`.

One object for every way a trained model is used: :func:`load_acoustic_model` reads a
checkpoint written by ``blspeech train`` (keys ``model``, ``model_config``, ``tokenizer``,
``normalizer``, ``frontend``, ``cmvn``, ``data_source``), and
:func:`blspeech.inference.bundle.load_bundle` a bundle file made from one. Either gives a
:class:`Bundle`: the model in eval mode with its tokenizer, text normalizer, front-end and
CMVN, fed exactly as in training. Decoding (:mod:`blspeech.inference.decode`), forced
alignment (:mod:`blspeech.inference.align`) and :func:`forward_data_dir` (log-likelihoods for
Kaldi decoders) read data dirs through it (:meth:`Bundle.dataset`, :meth:`Bundle.batches`);
:meth:`Bundle.transcribe` turns recordings into words. Hybrid models without the token
topology have no tokenizer (their pdfs are a Kaldi tree's): they forward, but do not decode
here.

Example:
    >>> am = load_acoustic_model("exp/ctc_bl/best.pt")                  # doctest: +SKIP
    >>> ds = am.dataset("data/test")                                      # doctest: +SKIP
    >>> for batch, log_probs, lengths in am.batches(ds, max_frames=20000):  # doctest: +SKIP
    ...     log_probs.shape                                   # (B, T', vocab)
    >>> am.transcribe("call.wav")                                         # doctest: +SKIP
    'please hold the line'
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from blspeech.devices import resolve_device
from blspeech.errors import UserError
from blspeech.frontend.features import CMVN, LogMel, Normalize
from blspeech.models.rel_attention import uses_self_attention

#: Checkpoint keys an acoustic model needs beyond ``model`` and ``model_config``.
REQUIRED_KEYS = ("model", "model_config", "tokenizer", "normalizer", "cmvn", "data_source")
#: Front-end settings that must agree between training features and decoding features.
_FRONTEND_KEYS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms",
                  "use_energy")
#: Recordings longer than this many feature frames (20 s) are transcribed in chunks.
CHUNK_FRAMES = 2000


@dataclass
class Word:
    """A recognized word with its time in the audio (seconds)."""

    word: str
    start: float
    duration: float


class Bundle:
    """A trained acoustic model (CTC or hybrid head) with everything needed to run it.

    ``model`` is the :class:`~blspeech.models.asr.CTCModel` or ``HybridModel`` in eval mode
    (``model.encoder`` the bare encoder); ``tokenizer`` / ``normalizer`` are None for a
    Kaldi-tree hybrid model. ``frontend_config`` holds the training front-end's
    :class:`~blspeech.frontend.features.LogMel` options and :attr:`frontend` the module
    (dither off). ``cmvn_mode`` is the training CMVN: for ``global`` the statistics are the
    training data's (``cmvn``, a :class:`~blspeech.frontend.features.CMVN`); for
    ``speaker``/``utterance`` a data dir's ``cmvn.scp`` supplies them (:meth:`dataset`, as
    Kaldi recipes do), and a single recording is normalized with its own statistics
    (:meth:`normalize`). ``decoding`` holds the search settings a bundle file records.
    """

    def __init__(self, model: torch.nn.Module, *, tokenizer: Any = None, normalizer: Any = None,
                 frontend: Mapping[str, Any] | None = None, cmvn: str = "none",
                 cmvn_stats: torch.Tensor | None = None, norm_vars: bool = True,
                 data_source: str = "audio", decoding: Mapping[str, Any] | None = None,
                 device: str | torch.device = "cpu", path: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        self.frontend_config = dict(frontend or {})
        self.cmvn_mode = cmvn
        self.cmvn_stats = cmvn_stats
        self.norm_vars = bool(norm_vars)
        self.data_source = data_source
        self.decoding = dict(decoding or {})
        self.device = resolve_device(device)
        self.path = path
        #: The training data's global CMVN (None unless ``cmvn_mode`` is global): the one
        #: implementation that training, decoding, bundles and chunked inference share.
        self.cmvn = (None if cmvn_stats is None else
                     CMVN.from_stats(cmvn_stats, norm_vars).to(self.device))
        self._normalize = Normalize(cmvn, self.cmvn, self.norm_vars)
        self._frontend: LogMel | None = None
        #: Recordings longer than this many feature frames run in chunks (None: never; the
        #: Conformer's attention sees the whole recording).
        self.chunk_frames: int | None = None if uses_self_attention(model) else CHUNK_FRAMES

    def __repr__(self) -> str:
        enc = self.model.config["encoder"]["name"]
        return (f"Bundle({self.path!r}, encoder={enc}, head={self.model.config['head']}, "
                f"sample_rate={self.frontend_config.get('sample_rate')})")

    @property
    def is_hybrid(self) -> bool:
        return self.model.config.get("head") == "hybrid"

    @property
    def frontend(self) -> LogMel:
        """The training front-end (dither off: deterministic features)."""
        if self._frontend is None:
            if "sample_rate" not in self.frontend_config:
                raise UserError(f"{self.path} records no front-end with a sample rate (its "
                                "features were made outside blspeech); make a bundle with "
                                "the LogMel settings: 'blspeech make-bundle CHECKPOINT OUT "
                                "--frontend data/train/conf/fbank.yaml'")
            try:
                fe = LogMel(**dict(self.frontend_config, dither=0.0))
            except (TypeError, ValueError) as e:
                raise UserError(f"{self.path}: bad front-end settings: {e}") from e
            self._frontend = fe.eval().to(self.device)
        return self._frontend

    @property
    def sample_rate(self) -> int:
        return int(self.frontend.sample_rate)

    @property
    def frame_shift(self) -> float:
        """Seconds between feature frames (Kaldi's default 10 ms when not recorded)."""
        return float(self.frontend_config.get("frame_shift_ms", 10.0)) / 1000.0

    @property
    def frame_seconds(self) -> float:
        """Seconds per model output frame: frame shift x the encoder's time subsampling."""
        return self.frame_shift * int(getattr(self.model, "time_subsampling", 1))

    @property
    def feature_dim(self) -> int | None:
        """The encoder's input dimension, when its config records it."""
        dim = self.model.config.get("encoder", {}).get("num_mel_bins")
        return None if dim is None else int(dim)

    # -- data dirs

    def dataset(self, data_dir: str | os.PathLike, *, transcripts: bool | None = None,
                allow_wavscp_commands: bool | None = None) -> Any:
        """A :class:`~blspeech.data.speech.SpeechDataset` over ``data_dir`` fed as in training.

        ``transcripts=None`` reads ``text`` when the data dir has one. With
        ``allow_wavscp_commands=False`` ``wav.scp`` commands are refused (as
        ``BLSPEECH_NO_WAVSCP_COMMANDS=1`` does). Per-speaker/-utterance CMVN comes from the
        data dir's ``cmvn.scp`` here; global CMVN is applied to each batch.
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
        ds_cmvn = self.cmvn_mode if self.cmvn_mode in ("speaker", "utterance") else "none"
        ds = SpeechDataset(data_dir, source=self.data_source,
                           # No recorded front-end: the data dir's conf/fbank.yaml.
                           frontend=(self.frontend_config or None)
                           if self.data_source == "audio" else None,
                           cmvn=ds_cmvn, norm_vars=self.norm_vars, transcripts=transcripts,
                           allow_commands=allow_wavscp_commands)
        self._check_feature_dim(ds, data_dir)
        if self.data_source == "feats":
            self._check_feats_config(data_dir)
        return ds

    def _check_feature_dim(self, ds: Any, data_dir: str) -> None:
        want = self.feature_dim
        if want is None or not len(ds) or ds.feat_dim == want:
            return
        if self.data_source == "audio":
            raise UserError(f"{self.path}: its front-end gives {ds.feat_dim} features but "
                            f"the model expects {want}; the checkpoint is inconsistent")
        raise UserError(f"{data_dir}: features have dimension {ds.feat_dim} but the model "
                        f"{self.path} expects {want}; recompute them with the model's "
                        f"settings ('blspeech compute-feats{self._compute_feats_options()}')")

    def _compute_feats_options(self) -> str:
        return "".join(f" --{k.replace('_', '-')} {self.frontend_config[k]}"
                       for k in ("sample_rate", "num_mel_bins") if k in self.frontend_config)

    def _check_feats_config(self, data_dir: str) -> None:
        """Warn when the data dir's features were computed with other settings."""
        from blspeech.frontend.extract import FBANK_CONF, load_frontend_config

        conf = os.path.join(data_dir, FBANK_CONF)
        if not self.frontend_config or not os.path.isfile(conf):
            return
        theirs, ours = load_frontend_config(conf), self.frontend_config
        differ = [k for k in _FRONTEND_KEYS if k in theirs and k in ours and theirs[k] != ours[k]]
        if differ:
            shown = ", ".join(f"{k}={theirs[k]} (model: {ours[k]})" for k in differ)
            warnings.warn(f"{conf}: features were computed with {shown}; the model will see "
                          "features unlike its training data", stacklevel=3)

    def batches(self, dataset: Any, *, max_frames: int = 20000, num_workers: int = 0,
                progress: bool = False, desc: str = "decode"
                ) -> Iterator[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
        """``(batch, log_probs, out_lengths)`` over ``dataset`` (from :meth:`dataset`) in
        length-sorted batches of at most ``max_frames`` padded feature frames (``tqdm`` bar
        with ``progress``)."""
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
                    log_probs, out_lengths = self.log_probs(batch["feats"], batch["lengths"],
                                                            normalized=True)
                except RuntimeError as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    utts = ", ".join(batch["utts"][:3]) + (", ..." if len(batch["utts"]) > 3
                                                           else "")
                    raise UserError(f"the model failed on utterance(s) {utts} (frames "
                                    f"{batch['lengths'].tolist()[:3]}): {first}") from e
                yield batch, log_probs, out_lengths
                bar.update(len(batch["utts"]))

    # -- the pipeline, one step at a time

    def features(self, audio: torch.Tensor, lengths: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features of ``audio`` (``(N,)`` or ``(B, N)`` float samples in [-1, 1] at
        :attr:`sample_rate`) as in training: ``(B, T, F)`` and frames per row."""
        audio = torch.as_tensor(audio, dtype=torch.float32, device=self.device)
        if audio.dim() == 1:
            audio = audio[None]
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long)
        with torch.inference_mode():
            return self.frontend(audio, lengths.to(self.device))

    def normalize(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """CMVN as in training (see :class:`~blspeech.frontend.features.Normalize`).
        Padded frames stay 0."""
        return self._normalize(feats.to(self.device), lengths.to(self.device))

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs ``(B, T', D)`` and lengths for log-mel ``feats`` as
        :meth:`features` makes them (CMVN is applied here)."""
        with torch.inference_mode():
            return self.model.encoder(self.normalize(feats, lengths), lengths.to(self.device))

    def log_probs(self, feats: torch.Tensor, lengths: torch.Tensor, *,
                  normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, F)`` features -> the model's log-probabilities ``(B, T', V)`` float32 (CTC
        tokens or hybrid pdf posteriors) and lengths, without gradients.

        CMVN is applied here; ``normalized``: the features already carry their
        per-speaker/-utterance CMVN (as :meth:`dataset` gives them), so only global CMVN is.
        """
        feats = feats.to(self.device, non_blocking=True)
        lengths = lengths.to(self.device)
        if not normalized or self.cmvn is not None:
            feats = self._normalize(feats, lengths)
        with torch.inference_mode():
            log_probs, out_lengths = self.model(feats, lengths)
        return log_probs.float(), out_lengths

    # -- transcription

    def _decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Any]:
        from blspeech.decoding.ctc import greedy_batch
        from blspeech.inference.decode import viterbi_searcher

        if self.tokenizer is None:
            raise UserError(f"{self.path}: a hybrid model over Kaldi pdfs has no tokenizer; "
                            "decode its log_probs with a Kaldi graph")
        if not self.is_hybrid:
            return greedy_batch(log_probs.cpu(), lengths.cpu())
        search = viterbi_searcher(self.model, float(self.decoding.get("insertion_penalty", 0.0)),
                                  float(self.decoding.get("prior_scale", 1.0)))
        return search(log_probs, lengths)

    def _load_audio(self, item: Any, sample_rate: int | None) -> torch.Tensor:
        if isinstance(item, str | os.PathLike):
            from blspeech.io.audio import read_audio

            audio, _ = read_audio(os.fspath(item), self.sample_rate, allow_commands=False)
            return torch.from_numpy(np.asarray(audio, dtype=np.float32))
        audio = torch.as_tensor(np.asarray(item, dtype=np.float32))
        if audio.dim() != 1:
            raise UserError(f"audio must be one channel of samples (1-D), got shape "
                            f"{tuple(audio.shape)}")
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate:
            import torchaudio.functional as AF

            audio = AF.resample(audio, rate, self.sample_rate)
        return audio

    def _recording_log_probs(self, feats: torch.Tensor, frames: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.chunk_frames is not None and int(frames[0]) > self.chunk_frames:
            from blspeech.inference.chunked import chunked_forward

            # Features are small (40 floats per 10 ms); the model's activations are what
            # chunking keeps flat. (chunked_forward runs without gradients itself.)
            lp, n = chunked_forward(self.model, self.normalize(feats, frames)[0],
                                    chunk_frames=self.chunk_frames)
            return lp.float()[None], torch.tensor([n])
        return self.log_probs(feats, frames)

    def transcribe_words(self, audio: Any, sample_rate: int | None = None
                         ) -> list[list[Word]]:
        """Words with times for each input (see :meth:`transcribe` for the inputs)."""
        from blspeech.decoding.ctc import hypothesis_words, word_times

        items = list(audio) if isinstance(audio, list | tuple) else [audio]
        waves = [self._load_audio(x, sample_rate) for x in items]
        out = []
        for wave in waves:  # one at a time: recordings differ in length
            feats, frames = self.features(wave)
            if int(frames[0]) == 0:
                out.append([])
                continue
            log_probs, lengths = self._recording_log_probs(feats, frames)
            hyp = self._decode(log_probs, lengths)[0]
            pieces = self.tokenizer.tokens
            words = word_times([pieces[t] for t in hyp.tokens], hyp.frames,
                               self.frame_seconds)
            spelled = hypothesis_words(hyp, self.tokenizer)
            if len(words) != len(spelled):  # tokenizer spelled differently: no times
                out.append([Word(w, 0.0, 0.0) for w in spelled])
            else:
                out.append([Word(w, round(s, 3), round(d, 3)) for (w, s, d) in words])
        return out

    def transcribe(self, audio: Any, sample_rate: int | None = None) -> str | list[str]:
        """Transcribe one recording or a list of them.

        ``audio``: a file path (wav, flac, SPHERE, ...; resampled to :attr:`sample_rate`),
        or 1-D float samples in [-1, 1] (numpy or tensor) at ``sample_rate`` (default: the
        model's), or a list of these (then a list of strings is returned).
        """
        words = self.transcribe_words(audio, sample_rate)
        texts = [" ".join(w.word for w in ws) for ws in words]
        return texts if isinstance(audio, list | tuple) else texts[0]


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
                        fuse_bn: bool = True) -> Bundle:
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
    ckpt = _read_checkpoint(path)
    return bundle_from_entries(ckpt, path, data_source=ckpt["data_source"], device=device,
                               fuse_bn=fuse_bn)


def bundle_from_entries(entries: Mapping[str, Any], path: str, *, data_source: str = "audio",
                        decoding: Mapping[str, Any] | None = None,
                        device: str | torch.device = "cpu", fuse_bn: bool = False) -> Bundle:
    """A :class:`Bundle` from the entries of a checkpoint or a bundle file (``model``,
    ``model_config``, ``tokenizer``, ``normalizer``, ``frontend``, ``cmvn``), each checked:
    :class:`UserError` naming ``path`` and the entry for one that is wrong."""
    dev = resolve_device(device)
    if data_source not in ("feats", "audio"):
        raise _bad(path, "bad data_source", f"expected 'feats' or 'audio', got {data_source!r}")
    model = _rebuild_model(entries, path)
    tokenizer, normalizer = _read_text_entries(entries, model, path)
    frontend = _read_frontend(entries.get("frontend"), data_source, path)
    mode, stats, norm_vars = _read_cmvn(entries["cmvn"], path)
    dim = model.config.get("encoder", {}).get("num_mel_bins")
    if stats is not None and dim is not None and stats.shape[1] - 1 != int(dim):
        raise _bad(path, "bad cmvn", f"stats have dimension {stats.shape[1] - 1} but the "
                                     f"model takes {dim} features")
    model.eval()
    if fuse_bn:
        model = fused_for_inference(model)
    model.to(dev)
    return Bundle(model, tokenizer=tokenizer, normalizer=normalizer, frontend=frontend,
                  cmvn=mode, cmvn_stats=stats, norm_vars=norm_vars, data_source=data_source,
                  decoding=decoding, device=dev, path=path)


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
    from blspeech.data.alignments import token_topology_pdfs
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


def _read_frontend(entry: Any, source: str, path: str) -> dict[str, Any]:
    """The recorded LogMel options (checked when the model reads audio)."""
    frontend = entry or {}
    if not isinstance(frontend, Mapping):
        raise _bad(path, "bad frontend", "expected a dict of LogMel options")
    frontend = dict(frontend)
    if source == "audio" and frontend:
        try:
            LogMel(**frontend)
        except (TypeError, ValueError) as e:
            raise _bad(path, "bad frontend", e) from e
    return frontend


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


__all__ = ["Bundle", "Word", "bundle_from_entries", "load_acoustic_model"]
