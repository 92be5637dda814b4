"""Speech datasets and length-bucketed batching for Kaldi data dirs.

:class:`SpeechDataset` serves one utterance at a time, either from precomputed features
(``feats.scp``, read by byte offset) or computed on the fly from audio (``wav.scp``).
:class:`BucketingBatchSampler` groups utterances of similar length into batches whose
padded size stays under a frame budget, split across distributed ranks;
:func:`collate` pads a batch and :func:`make_dataloader` ties them together.

Example:
    >>> ds = SpeechDataset("data/train", cmvn="speaker")                 # doctest: +SKIP
    >>> sampler = BucketingBatchSampler(ds.lengths, max_frames=20000)    # doctest: +SKIP
    >>> loader = make_dataloader(ds, sampler, num_workers=2)             # doctest: +SKIP
    >>> for epoch in range(10):                                          # doctest: +SKIP
    ...     sampler.set_epoch(epoch)
    ...     for batch in loader:
    ...         batch["feats"].shape, batch["lengths"]       # (B, Tmax, F), (B,)
"""

from __future__ import annotations

import functools
import os
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from blspeech.errors import UserError
from blspeech.io import kaldi

SOURCES = ("feats", "audio")
CMVN_MODES = ("none", "global", "speaker", "utterance")


# --- dataset ---------------------------------------------------------------------------


class SpeechDataset(Dataset):
    """Utterances of a Kaldi data dir as ``dict(utt, feats (T, F) float32, text, speaker)``.

    Args:
        data_dir: a Kaldi data dir (``wav.scp``/``feats.scp``, ``text``, ``utt2spk`` ...).
        source: ``'feats'`` reads ``feats.scp`` (random access by byte offset; needs
            ``utt2num_frames``, both written by ``blspeech compute-feats``); ``'audio'``
            reads ``wav.scp`` and computes log-mel features per item.
        frontend: :class:`~blspeech.frontend.features.LogMel` options for ``source='audio'``;
            default: ``data_dir/conf/fbank.yaml`` when present (the config that
            ``compute-feats`` used), else LogMel's defaults. Without a ``sample_rate``
            the first utterance's rate is used (as ``compute-feats`` does); audio at
            other rates is resampled.
        cmvn: ``'none'``, ``'global'`` (stats in ``data_dir/global_cmvn``), ``'speaker'`` or
            ``'utterance'`` (stats in ``data_dir/cmvn.scp``, keyed by speaker / utterance).
        norm_vars: CMVN also scales to unit variance (not just mean removal).
        transcripts: read ``text``; ``False`` for unlabelled data (``text`` is then None).
        allow_commands: run ``wav.scp`` commands (``source='audio'``); ``False`` refuses
            them, as ``BLSPEECH_NO_WAVSCP_COMMANDS=1`` does (see :mod:`blspeech.io.audio`).

    ``lengths`` (frames per utterance) is known without reading any features, for
    :class:`BucketingBatchSampler`. Inconsistent files raise :class:`UserError` naming
    the file, line and utterance.

    Example:
        >>> ds = SpeechDataset("data/test", cmvn="global")    # doctest: +SKIP
        >>> item = ds[0]; item["utt"], item["feats"].shape     # doctest: +SKIP
        ('spk0-utt000', torch.Size([312, 80]))
    """

    def __init__(self, data_dir: str | os.PathLike, *, source: str = "feats",
                 frontend: Mapping[str, Any] | None = None, cmvn: str = "none",
                 norm_vars: bool = True, transcripts: bool = True,
                 allow_commands: bool | None = None) -> None:
        self.data_dir = os.fspath(data_dir)
        if not os.path.isdir(self.data_dir):
            raise UserError(f"data dir {self.data_dir} does not exist or is not a directory")
        if source not in SOURCES:
            raise UserError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if cmvn not in CMVN_MODES:
            raise UserError(f"cmvn must be one of {', '.join(CMVN_MODES)}, got {cmvn!r}")
        self.source, self.cmvn, self.norm_vars = source, cmvn, norm_vars
        self._frontend: Any = None
        self._reader: Any = None
        self._utt2spk: dict[str, kaldi.TableEntry] | None = None
        if source == "feats":
            self._init_feats()
        else:
            self._init_audio(frontend, allow_commands)
        self._index = {u: i for i, u in enumerate(self.utts)}
        self.speakers = self._read_speakers()
        self.texts = self._read_texts() if transcripts else None
        self._global_cmvn: np.ndarray | None = None
        self._cmvn_rx: list[str] = []
        self._cmvn_cache: dict[str, np.ndarray] = {}
        if cmvn != "none":
            self._init_cmvn()

    def _path(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    def _where(self, utt: str) -> str:
        """``file:line: utterance 'id'`` of the line that defines ``utt``'s features/audio."""
        if self.source == "feats":
            return f"{self._path('feats.scp')}:{self._feats[utt].line}: utterance {utt!r}"
        if hasattr(self._reader, "where"):
            return self._reader.where(utt)
        return f"{self._path('wav.scp')}: utterance {utt!r}"

    # -- features from feats.scp

    def _init_feats(self) -> None:
        scp = self._path("feats.scp")
        if not os.path.isfile(scp):
            raise UserError(f"{scp} not found: run 'blspeech compute-feats {self.data_dir}' "
                            "first, or use source='audio' to compute features on the fly")
        self._feats = kaldi.read_table(scp)
        self.utts: list[str] = list(self._feats)
        if not self.utts:
            raise UserError(f"{scp} is empty")
        nf_path = self._path("utt2num_frames")
        if not os.path.isfile(nf_path):
            raise UserError(f"{nf_path} not found (needed to batch by length without reading "
                            f"every feature matrix): run 'blspeech compute-feats "
                            f"{self.data_dir}' to write it together with feats.scp")
        num_frames = kaldi.read_table(nf_path, check_sorted=False)
        self.lengths: list[int] = []
        for utt in self.utts:
            entry = num_frames.get(utt)
            if entry is None:
                raise UserError(f"{scp}:{self._feats[utt].line}: utterance {utt!r} is missing "
                                f"from {nf_path}; rerun 'blspeech compute-feats "
                                f"{self.data_dir}'")
            try:
                n = int(entry.value)
                if n < 0:
                    raise ValueError
            except ValueError as e:
                raise UserError(f"{nf_path}:{entry.line}: utterance {utt!r}: frame count "
                                f"{entry.value!r} is not a non-negative integer") from e
            self.lengths.append(n)

    def _read_feats(self, i: int) -> np.ndarray:
        utt = self.utts[i]
        where = self._where(utt)
        try:
            mat = kaldi.read_matrix(self._feats[utt].value)
        except kaldi.KaldiFormatError as e:
            raise UserError(f"{where}: {e}") from e
        if mat.shape[0] != self.lengths[i]:
            # The sampler batched by utt2num_frames; a stale file breaks max_frames.
            raise UserError(f"{where}: has {mat.shape[0]} frames but utt2num_frames says "
                            f"{self.lengths[i]}; rerun 'blspeech compute-feats "
                            f"{self.data_dir}'")
        return np.asarray(mat, dtype=np.float32)

    # -- features computed from audio

    def _init_audio(self, frontend: Mapping[str, Any] | None,
                    allow_commands: bool | None) -> None:
        from blspeech.frontend.extract import FBANK_CONF, load_frontend_config
        from blspeech.frontend.features import LogMel
        from blspeech.io.audio import AudioReader

        where = "frontend options"
        if frontend is None and os.path.isfile(self._path(FBANK_CONF)):
            frontend, where = load_frontend_config(self._path(FBANK_CONF)), self._path(FBANK_CONF)
        frontend = dict(frontend or {})
        # Without a configured rate, use the first utterance's, as compute-feats does.
        self._reader = AudioReader(self.data_dir, frontend.get("sample_rate"),
                                   allow_commands=allow_commands)
        self.utts = list(self._reader.utterance_ids)
        if not self.utts:
            raise UserError(f"{self._path('wav.scp')} lists no utterances")
        frontend["sample_rate"] = self._reader.sample_rate
        try:
            self._frontend = LogMel(**frontend).eval()
        except TypeError as e:
            raise UserError(f"{where}: not a valid LogMel config: {e}") from e
        self.frontend_config: dict[str, Any] = self._frontend.config()
        rate = int(self.frontend_config["sample_rate"])
        self.lengths = [int(self._frontend.num_frames(n))
                        for n in _audio_samples(self.data_dir, self.utts, rate, self._reader)]

    def _compute_feats(self, i: int) -> np.ndarray:
        wave = torch.from_numpy(np.asarray(self._reader.read(self.utts[i]), dtype=np.float32))
        with torch.no_grad():
            feats, frames = self._frontend(wave[None], torch.tensor([wave.numel()]))
        return feats[0, : int(frames[0])].numpy()

    # -- speakers, transcripts, CMVN

    def _read_speakers(self) -> list[str]:
        path = self._path("utt2spk")
        if not os.path.isfile(path):
            # Kaldi's convention for data without speaker labels: each utterance its own.
            return list(self.utts)
        table = kaldi.read_table(path)
        self._utt2spk = table
        self._check_same_ids(table, path)
        return [table[u].value for u in self.utts]

    def _read_texts(self) -> list[str]:
        path = self._path("text")
        if not os.path.isfile(path):
            raise UserError(f"{path} not found; pass transcripts=False for unlabelled data")
        table = kaldi.read_table(path, allow_empty_value=True)
        self._check_same_ids(table, path)
        return [table[u].value for u in self.utts]

    def _check_same_ids(self, table: Mapping[str, kaldi.TableEntry], path: str) -> None:
        """Every utterance in ``table`` and nothing else (Kaldi's validate_data_dir rule)."""
        listing = ("feats.scp" if self.source == "feats" else
                   "segments" if os.path.isfile(self._path("segments")) else "wav.scp")
        for key, entry in table.items():
            if key not in self._index:
                raise UserError(f"{path}:{entry.line}: utterance {key!r} is not in "
                                f"{self._path(listing)}; fix the data dir (e.g. 'blspeech "
                                f"fix-data-dir {self.data_dir}') or recompute the features")
        for utt in self.utts:
            if utt not in table:
                raise UserError(f"{self._where(utt)}: missing from {path}")

    def _init_cmvn(self) -> None:
        if self.cmvn == "global":
            path = self._path("global_cmvn")
            if not os.path.isfile(path):
                raise UserError(f"{path} not found: run 'blspeech compute-cmvn "
                                f"{self.data_dir}'")
            self._global_cmvn = self._load_stats(path, path)
            return
        scp = self._path("cmvn.scp")
        if not os.path.isfile(scp):
            raise UserError(f"{scp} not found: run 'blspeech compute-cmvn --per-{self.cmvn} "
                            f"{self.data_dir}'")
        table = kaldi.read_table(scp)
        for i, utt in enumerate(self.utts):
            key = self.speakers[i] if self.cmvn == "speaker" else utt
            if key in table:
                self._cmvn_rx.append(table[key].value)
                continue
            if self.cmvn == "speaker":
                source = (f"{self._path('utt2spk')}:{self._utt2spk[utt].line}"
                          if self._utt2spk is not None else "no utt2spk")
                hint = (" (cmvn.scp looks utterance-keyed: use cmvn='utterance')"
                        if utt in table else "")
                raise UserError(f"{scp}: no statistics for speaker {key!r} of utterance "
                                f"{utt!r} ({source}){hint}; rerun 'blspeech compute-cmvn "
                                f"--per-speaker {self.data_dir}'")
            hint = (" (cmvn.scp looks speaker-keyed: use cmvn='speaker')"
                    if self.speakers[i] in table else "")
            raise UserError(f"{scp}: no statistics for utterance {utt!r}{hint}; rerun "
                            f"'blspeech compute-cmvn --per-utterance {self.data_dir}'")

    def _load_stats(self, rxspec: str, where: str) -> np.ndarray:
        try:
            stats = kaldi.read_matrix(rxspec)
        except kaldi.KaldiFormatError as e:
            raise UserError(f"{where}: {e}") from e
        if stats.ndim != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
            raise UserError(f"{where}: CMVN stats must be a 2 x (dim+1) matrix, got shape "
                            f"{stats.shape}")
        if not np.isfinite(stats).all():
            raise UserError(f"{where}: CMVN stats contain NaN or inf")
        try:
            kaldi.cmvn_from_stats(stats)  # counts no frames, negative variance: say where
        except ValueError as e:
            raise UserError(f"{where}: {e}") from e
        return stats

    def _stats_for(self, i: int) -> np.ndarray:
        if self._global_cmvn is not None:
            return self._global_cmvn
        rx = self._cmvn_rx[i]
        if rx in self._cmvn_cache:
            return self._cmvn_cache[rx]
        stats = self._load_stats(rx, f"{self._path('cmvn.scp')}: utterance {self.utts[i]!r}")
        if self.cmvn == "speaker":  # few speakers, many reads each: worth caching
            self._cmvn_cache[rx] = stats
        return stats

    # -- Dataset protocol

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.utts[i]
        mat = self._read_feats(i) if self.source == "feats" else self._compute_feats(i)
        if not np.isfinite(mat).all():
            bad = int((~np.isfinite(mat)).any(axis=1).sum())
            raise UserError(f"{self._where(utt)}: features contain NaN or inf in "
                            f"{bad} of {mat.shape[0]} frames; recompute them or remove the "
                            "utterance")
        if self.cmvn != "none":
            from blspeech.frontend.features import apply_cmvn

            stats = self._stats_for(i)
            if stats.shape[1] - 1 != mat.shape[1]:
                raise UserError(f"{self._where(utt)}: CMVN stats have dim {stats.shape[1] - 1} "
                                f"but the features have dim {mat.shape[1]}; recompute the CMVN "
                                "stats")
            mat = apply_cmvn(mat, stats, self.norm_vars)
        return {"utt": utt, "feats": torch.from_numpy(np.ascontiguousarray(mat, np.float32)),
                "text": None if self.texts is None else self.texts[i],
                "speaker": self.speakers[i]}

    def subset(self, utts: Sequence[str]) -> SpeechDataset:
        """The same dataset restricted to ``utts`` (kept in this dataset's order), e.g. the
        utterances that have alignments."""
        import copy

        keep = set(utts)
        idx = [i for i, u in enumerate(self.utts) if u in keep]
        if len(idx) != len(keep):
            unknown = sorted(keep - set(self.utts))[:3]
            raise UserError(f"utterances not in {self.data_dir}: {', '.join(unknown)}")
        sub = copy.copy(self)
        sub.utts = [self.utts[i] for i in idx]
        sub.lengths = [self.lengths[i] for i in idx]
        sub.speakers = [self.speakers[i] for i in idx]
        sub.texts = None if self.texts is None else [self.texts[i] for i in idx]
        sub._cmvn_rx = [self._cmvn_rx[i] for i in idx] if self._cmvn_rx else []
        sub._index = {u: i for i, u in enumerate(sub.utts)}
        return sub

    @property
    def feat_dim(self) -> int:
        """Feature dimension (reads one matrix for ``source='feats'``)."""
        if self._frontend is not None:
            return int(self._frontend.feature_dim)
        return int(self._read_feats(0).shape[1])


def _audio_samples(data_dir: str, utts: Sequence[str], rate: int, reader: Any) -> list[int]:
    """Samples per utterance at ``rate``, without decoding plain audio files.

    Plain files are measured exactly from their headers (``soundfile.info``); for
    ``wav.scp`` commands, whose only way to measure is to run them, ``utt2dur`` is used
    when it lists the utterance (``compute-feats`` writes it; rounded to 0.1 ms, so a
    frame may be off by one), else the command runs once here.
    """
    utt2dur_path = os.path.join(data_dir, "utt2dur")
    utt2dur = (kaldi.read_table(utt2dur_path, check_sorted=False)
               if os.path.isfile(utt2dur_path) else {})
    wavs = kaldi.read_table(os.path.join(data_dir, "wav.scp"), check_sorted=False)
    seg_path = os.path.join(data_dir, "segments")
    segments = (kaldi.read_table(seg_path, check_sorted=False)
                if os.path.isfile(seg_path) else None)
    infos: dict[str, tuple[int, int] | None] = {}
    samples = []
    for utt in utts:
        rec, span = utt, None
        if segments is not None:  # AudioReader has validated the segment lines already
            rec, start, end = segments[utt].value.split()
            span = (float(start), float(end))
        spec = wavs[rec].value
        if spec not in infos:
            infos[spec] = _probe(spec)
        info = infos[spec]
        if info is None:  # a command, or a file soundfile cannot parse
            samples.append(_duration_samples(utt2dur[utt], utt2dur_path, rate)
                           if utt in utt2dur else len(reader.read(utt)))
            continue
        native, frames = info
        if span is not None:  # the same sample arithmetic as AudioReader
            first = min(int(round(span[0] * native)), frames)
            frames = min(int(round(span[1] * native)), frames) - first
        # Resampling gives ceil(n * new / old) samples (exact integer arithmetic).
        samples.append(frames if native == rate else -(-frames * rate // native))
    return samples


def _duration_samples(entry: kaldi.TableEntry, path: str, rate: int) -> int:
    try:
        seconds = float(entry.value)
        if not seconds >= 0:
            raise ValueError
    except ValueError as e:
        raise UserError(f"{path}:{entry.line}: utterance {entry.key!r}: duration "
                        f"{entry.value!r} is not a non-negative number") from e
    return int(round(seconds * rate))


def _probe(spec: str) -> tuple[int, int] | None:
    """(sample rate, samples) from a plain file's header; None for commands/unreadable."""
    import soundfile

    if spec.rstrip().endswith("|"):
        return None
    try:
        info = soundfile.info(spec)
    except Exception:  # AudioReader.read will raise the proper, located error
        return None
    return int(info.samplerate), int(info.frames)


# --- batching ----------------------------------------------------------------------------


class BucketingBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances whose padded size stays within ``max_frames``.

    Each epoch: sort utterances by length (ties in random order), cut the sorted list into
    ``buckets`` equal-count buckets, shuffle within each bucket, fill batches greedily
    while ``longest x count <= max_frames``, then shuffle the batch order. Everything is a
    function of ``(seed, epoch)``, so every rank computes the same global batch list and
    takes every ``num_replicas``-th batch starting at ``rank``. With ``shuffle=False``
    batches follow length order (least padding; use it for evaluation).

    All ranks get the same number of batches (collectives in DDP would hang otherwise):
    by default the global list is padded by repeating batches from its start, as
    :class:`~torch.utils.data.DistributedSampler` does; ``drop_last=True`` drops the last
    ``len % num_replicas`` batches instead. An utterance longer than ``max_frames``
    becomes a batch of its own (with a warning), never silently dropped.

    ``state_dict()`` records the epoch and how many batches this rank's iterator has
    yielded; after ``load_state_dict()`` the next iteration (of that epoch; ``set_epoch``
    with the same epoch keeps the position) resumes right after them. With DataLoader
    workers the sampler runs ahead of training (prefetch): save the ``state_dict()`` of
    the loader from :func:`make_dataloader` instead, which counts delivered batches.

    Example:
        >>> s = BucketingBatchSampler([100, 300, 120, 290, 500, 510], max_frames=1000,
        ...                           buckets=2, shuffle=False, num_replicas=1, rank=0)
        >>> list(s), len(s)
        ([[0, 2, 3], [1, 4], [5]], 3)
        >>> it = iter(s); first = next(it); state = s.state_dict()
        >>> state["epoch"], state["batches_done"]
        (0, 1)
        >>> s.load_state_dict(state); s.set_epoch(0); list(s)   # resume mid-epoch
        [[1, 4], [5]]
    """

    def __init__(self, lengths: Sequence[int], max_frames: int, *, shuffle: bool = True,
                 seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 buckets: int = 10, drop_last: bool = False, pad_multiple: int = 1,
                 sorted_epochs: int = 0) -> None:
        if pad_multiple < 1:
            raise UserError(f"pad_multiple must be at least 1, got {pad_multiple}")
        self.pad_multiple, self.sorted_epochs = int(pad_multiple), int(sorted_epochs)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if (self.lengths < 0).any():
            raise UserError("utterance lengths must be non-negative")
        if max_frames <= 0:
            raise UserError(f"max_frames must be positive, got {max_frames}")
        if buckets < 1:
            raise UserError(f"buckets must be at least 1, got {buckets}")
        if seed < 0:
            raise UserError(f"seed must be non-negative, got {seed}")
        # The process group's, when one exists (data sits below training: no import of it).
        group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if group else 1
        if rank is None:
            rank = torch.distributed.get_rank() if group else 0
        self.num_replicas, self.rank = num_replicas, rank
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise UserError(f"rank {self.rank} is not in [0, num_replicas={self.num_replicas})")
        self.max_frames, self.shuffle, self.seed = int(max_frames), shuffle, int(seed)
        self.buckets, self.drop_last = buckets, drop_last
        self.epoch = 0
        self._skip = 0      # batches to skip at the next iteration (set by load_state_dict)
        self._yielded = 0   # batches the current iteration has yielded, skipped ones included
        self._cache: tuple[int, list[list[int]]] | None = None
        too_long = np.flatnonzero(self.lengths > self.max_frames)
        if len(too_long):
            longest = int(too_long[np.argmax(self.lengths[too_long])])
            warnings.warn(f"{len(too_long)} utterance(s) are longer than max_frames="
                          f"{self.max_frames} (longest: index {longest}, "
                          f"{self.lengths[longest]} frames); each forms a batch of its own",
                          stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (call before each epoch)."""
        if epoch != self.epoch:
            # A resume offset only applies to the epoch it was saved in.
            self._skip = self._yielded = 0
        self.epoch = int(epoch)

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All ranks' batches of ``epoch`` (default: the current one), before rank splitting."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, epoch])
        order = np.arange(n)
        if self.shuffle:
            order = rng.permutation(n)
        order = order[np.argsort(self.lengths[order], kind="stable")]
        batches: list[list[int]] = []
        for bucket in np.array_split(order, min(self.buckets, n)) if n else []:
            if self.shuffle:
                bucket = rng.permutation(bucket)
            batches.extend(self._pack(bucket))
        if self.shuffle and epoch >= self.sorted_epochs:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        elif self.shuffle:  # SortaGrad: shortest batches first
            batches.sort(key=lambda b: int(self.lengths[b].max()))
        return batches

    def _pack(self, indices: np.ndarray) -> list[list[int]]:
        batches, batch, longest = [], [], 0
        m = self.pad_multiple
        for i in indices.tolist():
            length = -(-max(int(self.lengths[i]), 1) // m) * m
            if length > self.max_frames:
                batches.append([i])
                continue
            if batch and max(longest, length) * (len(batch) + 1) > self.max_frames:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, length)
        if batch:
            batches.append(batch)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self.global_batches()
            m, r = len(batches), self.num_replicas
            if self.drop_last:
                batches = batches[: m // r * r]
            elif m % r:
                batches = batches + [batches[j % m] for j in range(r - m % r)]
            self._cache = (self.epoch, batches[self.rank :: r])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: nothing happens until the first next(), so a DataLoader that calls
        # iter() twice per epoch (multi-worker reset) does not consume the resume offset.
        batches = self._rank_batches()
        start, self._skip = self._skip, 0
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1  # counted before the yield: this batch is now handed out
            yield list(batch)

    def __len__(self) -> int:
        """Batches the next iteration yields (this rank; after a resume, those remaining)."""
        return max(len(self._rank_batches()) - self._skip, 0)

    def state_dict(self, batches_done: int | None = None) -> dict[str, int]:
        """Epoch and batches yielded so far (or ``batches_done`` when the caller knows better)."""
        done = self._yielded if batches_done is None else int(batches_done)
        if self._skip:  # loaded but not iterated yet: still at the loaded position
            done = self._skip
        return {"epoch": self.epoch, "batches_done": done, "seed": self.seed,
                "num_replicas": self.num_replicas,
                "batches_per_epoch": len(self._rank_batches())}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at ``state``'s position: the next iteration skips the batches done."""
        done = int(state["batches_done"])
        if done:
            mine = (self.seed, self.num_replicas)
            saved = (state.get("seed", self.seed), state.get("num_replicas", self.num_replicas))
            if saved != mine:
                raise UserError(f"cannot resume mid-epoch: the checkpoint's sampler used seed "
                                f"{saved[0]} with {saved[1]} replica(s), this run uses seed "
                                f"{mine[0]} with {mine[1]}; use the same settings")
        self.epoch = int(state["epoch"])
        per_epoch = len(self._rank_batches())
        if "batches_per_epoch" in state and done and state["batches_per_epoch"] != per_epoch:
            raise UserError(f"cannot resume mid-epoch: the checkpoint's epoch had "
                            f"{state['batches_per_epoch']} batches per rank, this data has "
                            f"{per_epoch}; the data or max_frames changed")
        self._skip = min(done, per_epoch)
        self._yielded = self._skip


# --- collation and loading ---------------------------------------------------------------


def collate(items: Sequence[Mapping[str, Any]], pad_multiple: int = 1) -> dict[str, Any]:
    """Pad a list of dataset items into a batch.

    Returns ``dict(utts, feats (B, T, F) zero-padded, lengths (B,) int64, texts,
    speakers)``, where ``T`` is the longest length rounded up to a multiple of
    ``pad_multiple``.

    Example:
        >>> b = collate([{"utt": "a", "feats": torch.ones(3, 2), "text": "hi", "speaker": "s"},
        ...              {"utt": "b", "feats": torch.ones(1, 2), "text": None, "speaker": "s"}])
        >>> b["feats"].shape, b["lengths"].tolist(), b["feats"][1, 1:].abs().sum().item()
        (torch.Size([2, 3, 2]), [3, 1], 0.0)
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    feats = [it["feats"] for it in items]
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    extra = -padded.shape[1] % pad_multiple
    if extra:
        padded = torch.nn.functional.pad(padded, (0, 0, 0, extra))
    return {"utts": [it["utt"] for it in items],
            "feats": padded,
            "lengths": torch.tensor([f.shape[0] for f in feats], dtype=torch.int64),
            "texts": [it.get("text") for it in items],
            "speakers": [it.get("speaker") for it in items]}


def _seed_worker(worker_id: int) -> None:
    # DataLoader seeds torch per worker; numpy and random inherit the parent's state on
    # fork, so every worker would draw the same numbers without this.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SpeechDataLoader(DataLoader):
    """A DataLoader that knows how many batches it has delivered to the training loop.

    Its ``state_dict()`` is the sampler's, with ``batches_done`` counting batches that
    left the loader, not batches the sampler handed to prefetching workers.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sampler = self.batch_sampler
        # Read the resume offset before the workers start pulling batches.
        self._progress = (getattr(sampler, "epoch", 0), getattr(sampler, "_skip", 0))
        for batch in super().__iter__():
            self._progress = (self._progress[0], self._progress[1] + 1)
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The sampler position after the batches delivered so far (see load_state_dict)."""
        sampler = self.batch_sampler
        epoch, done = getattr(self, "_progress", (None, 0))
        if epoch != sampler.epoch:  # not iterated in this epoch yet
            return sampler.state_dict()
        return sampler.state_dict(batches_done=done)

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume: the next iteration starts right after the batches done in ``state``."""
        self.batch_sampler.load_state_dict(state)


def make_dataloader(dataset: Dataset, sampler: Sampler[list[int]], num_workers: int = 0,
                    pin_memory: bool = False, *, seed: int | None = None,
                    pad_multiple: int | None = None) -> SpeechDataLoader:
    """A loader yielding :func:`collate` batches in ``sampler``'s order.

    Batches are padded to a multiple of ``pad_multiple`` frames (default: the sampler's).

    Workers are persistent (started once, not every epoch) and seeded from ``seed``
    (default: the sampler's) and the rank, so random feature processing (dither) is
    reproducible and differs between ranks. ``pin_memory`` only applies when CUDA is
    available.

    Example:
        >>> loader = make_dataloader(ds, BucketingBatchSampler(ds.lengths, 20000),
        ...                          num_workers=2)                    # doctest: +SKIP
    """
    if num_workers < 0:
        raise UserError(f"num_workers must be >= 0, got {num_workers}")
    seed = getattr(sampler, "seed", 0) if seed is None else seed
    rank = getattr(sampler, "rank", 0)
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))
    if pad_multiple is None:
        pad_multiple = getattr(sampler, "pad_multiple", 1)
    collate_fn = functools.partial(collate, pad_multiple=pad_multiple) if pad_multiple > 1 \
        else collate
    return SpeechDataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn,
                            num_workers=num_workers, persistent_workers=num_workers > 0,
                            pin_memory=pin_memory and torch.cuda.is_available(),
                            worker_init_fn=_seed_worker if num_workers else None,
                            generator=generator)


__all__ = ["SpeechDataset", "BucketingBatchSampler", "SpeechDataLoader", "collate",
           "make_dataloader"]
