"""What ``blspeech train`` builds before training: data, batches, model, LR schedule, the
checkpoint to resume.

:func:`prepare` does every check that can fail on user input (paths, features, CMVN
stats, tokenizer, model options, the checkpoint to resume) before any process group
exists, so under torchrun every rank stops with the same one-line error instead of one
rank hanging in a collective. :mod:`blspeech.train` then only trains.

Example:
    >>> from blspeech.train_config import build_config
    >>> prep = prepare(build_config(), "data/train", "data/dev", "data/lang_char",
    ...                "exp/ctc", device="cpu", resume=True)            # doctest: +SKIP
    >>> prep.model.config["vocab_size"], prep.steps_per_epoch         # doctest: +SKIP
    (31, 120)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import distributed as dist_utils
from .checkpoint import load_checkpoint
from .data import BucketingBatchSampler, SpeechDataLoader, SpeechDataset, make_dataloader
from .errors import UserError
from .features import CMVN, LogMel, SpecAugment, merge_config
from .models.asr import CTCModel
from .optim import build_scheduler
from .text import TextNormalizer, Tokenizer
from .train_common import seed_everything
from .train_config import load_tokenizer_dir, plain


@dataclass
class Prepared:
    """Everything a training run needs, built and checked (see :func:`prepare`)."""

    cfg: dict[str, Any]
    exp_dir: str
    tokenizer: Tokenizer
    normalizer: TextNormalizer
    train_ds: SpeechDataset
    dev_ds: SpeechDataset
    sampler: BucketingBatchSampler
    train_loader: SpeechDataLoader
    dev_loader: SpeechDataLoader
    targets: dict[str, list[int]]
    dev_targets: dict[str, list[int]]
    dev_refs: dict[str, str]
    frontend: dict[str, Any] | None
    cmvn_stats: torch.Tensor | None
    cmvn_module: CMVN | None
    specaug: SpecAugment | None
    model: CTCModel
    ckpt: dict[str, Any] | None
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int

    def inference_payload(self) -> dict[str, Any]:
        """The checkpoint keys that decoding needs besides the weights."""
        d = self.cfg["data"]
        return {"tokenizer": self.tokenizer.to_dict(), "normalizer": self.normalizer.to_dict(),
                "frontend": None if self.frontend is None else dict(self.frontend),
                "cmvn": {"mode": d["cmvn"], "stats": self.cmvn_stats,
                         "norm_vars": d["norm_vars"]},
                "data_source": d["source"], "config": plain(self.cfg)}


def prepare(cfg: dict[str, Any], train_dir: str, dev_dir: str, tokenizer_dir: str,
            exp_dir: str, device: str | None, resume: bool) -> Prepared:
    """Check the inputs of a training run and build its data, model and resume state."""
    rank, world, local_rank = dist_utils.env_ranks()
    t, d = cfg["training"], cfg["data"]
    try:
        dev = dist_utils.resolve_device(device, local_rank)
    except ValueError as e:
        raise UserError(str(e)) from None
    if t["amp"] == "fp16" and dev.type != "cuda":
        raise UserError("config training.amp fp16 needs --device cuda; use bf16 on the CPU")
    tok, norm = load_tokenizer_dir(tokenizer_dir)

    frontend = _frontend(d, train_dir)
    # Speaker/utterance CMVN belongs to each dir (Kaldi's way); global CMVN uses the
    # training stats for dev too, as decoding will (they go into the checkpoint).
    ds_cmvn = d["cmvn"] if d["cmvn"] in ("speaker", "utterance") else "none"
    opts = dict(source=d["source"], cmvn=ds_cmvn, norm_vars=d["norm_vars"])
    train_ds = SpeechDataset(train_dir, frontend=frontend, **opts)
    if d["source"] == "audio":
        frontend = train_ds.frontend_config
    dev_ds = SpeechDataset(dev_dir, frontend=frontend, **opts)
    if d["source"] == "feats":
        _check_same_features(frontend, train_dir, dev_dir)
    feat_dim = train_ds.feat_dim
    if dev_ds.feat_dim != feat_dim:
        raise UserError(f"{dev_dir} has {dev_ds.feat_dim}-dim features but {train_dir} has "
                        f"{feat_dim}; compute both with the same front-end")
    stats, cmvn_module = None, None
    if d["cmvn"] == "global":
        stats, cmvn_module = _global_cmvn(train_dir, feat_dim, d["norm_vars"])

    targets = _encode(train_ds, tok, norm)
    dev_targets = _encode(dev_ds, tok, norm)
    dev_refs = {u: norm(text or "") for u, text in zip(dev_ds.utts, dev_ds.texts, strict=True)}
    seed_everything(t["seed"])  # the same initial weights on every rank and every run
    model = _build_model(cfg["model"], feat_dim, tok.vocab_size)

    sampler = BucketingBatchSampler(train_ds.lengths, d["max_frames"], shuffle=True,
                                    seed=t["seed"], num_replicas=world, rank=rank,
                                    buckets=d["buckets"])
    batches_per_epoch = len(sampler)
    if batches_per_epoch == 0:
        raise UserError(f"{train_dir} gives no training batches")
    pin = dev.type == "cuda"
    train_loader = make_dataloader(train_ds, sampler, d["num_workers"], pin, seed=t["seed"])
    # Dev batches: length order, packed greedily (one bucket: least padding), every
    # world-th batch per rank and no repeats (a repeated batch would count twice).
    dev_batches = BucketingBatchSampler(dev_ds.lengths, d["max_frames"], shuffle=False,
                                        num_replicas=1, rank=0, buckets=1
                                        ).global_batches()[rank::world]
    dev_loader = make_dataloader(dev_ds, dev_batches, d["num_workers"], pin, seed=t["seed"])
    steps_per_epoch = math.ceil(batches_per_epoch / t["accum_grad"])
    total_steps = t["epochs"] * steps_per_epoch
    if t["max_steps"]:
        total_steps = min(total_steps, t["max_steps"])
    specaug = SpecAugment(**cfg["specaug"]).train() if cfg["specaug"] is not None else None

    prep = Prepared(
        cfg=cfg, exp_dir=exp_dir, tokenizer=tok, normalizer=norm, train_ds=train_ds,
        dev_ds=dev_ds, sampler=sampler, train_loader=train_loader, dev_loader=dev_loader,
        targets=targets, dev_targets=dev_targets, dev_refs=dev_refs, frontend=frontend,
        cmvn_stats=stats, cmvn_module=cmvn_module, specaug=specaug, model=model, ckpt=None,
        batches_per_epoch=batches_per_epoch, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps)
    if resume:
        prep.ckpt = _checkpoint_to_resume(prep)
    return prep


def noam(step: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Noam LR multiplier (Vaswani et al.; ESPnet's ``NoamLR`` normalized to peak 1).

    Rises linearly to 1 at ``warmup_steps``, then decays as ``sqrt(warmup / step)``,
    floored at ``min_lr_ratio``. ``step`` is 0-based.

    Example:
        >>> [round(noam(s, 4), 3) for s in (0, 3, 15)]
        [0.25, 1.0, 0.5]
    """
    s = step + 1
    return max(min(s / warmup_steps, math.sqrt(warmup_steps / s)),
               min_lr_ratio if s > warmup_steps else 0.0)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Mapping[str, Any],
                       total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The config's ``schedule`` section as a per-step scheduler (``warmup_cosine`` from
    :func:`blspeech.optim.build_scheduler`, or :func:`noam`)."""
    if schedule["name"] == "noam":
        fn = functools.partial(noam, warmup_steps=schedule["warmup_steps"],
                               min_lr_ratio=schedule["min_lr_ratio"])
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    return build_scheduler(optimizer, schedule["warmup_steps"], total_steps,
                           schedule["min_lr_ratio"])


def _frontend(d: dict[str, Any], train_dir: str) -> dict[str, Any] | None:
    from .extract import FBANK_CONF, load_frontend_config

    conf = os.path.join(train_dir, FBANK_CONF)
    given = load_frontend_config(d["frontend"]) if d["frontend"] is not None else None
    if d["source"] == "feats":
        # The features exist already: their conf/fbank.yaml says how they were made.
        found = load_frontend_config(conf) if os.path.isfile(conf) else None
        if found is not None and given is not None and \
                _full_frontend(found) != _full_frontend(given):
            raise UserError(f"config data.frontend differs from {conf}, which describes the "
                            "features in feats.scp; remove data.frontend or recompute them")
        given = found if found is not None else given
        if given is None:
            return None  # e.g. Kaldi-made features: decoding must then use features too
        if "sample_rate" not in given:
            raise UserError("config data.frontend needs sample_rate with data.source feats")
        return _full_frontend(given)
    if given is None and os.path.isfile(conf):
        given = load_frontend_config(conf)
    return given  # SpeechDataset completes it (sample rate of the first utterance)


def _full_frontend(cfg: dict[str, Any]) -> dict[str, Any]:
    try:
        return LogMel(**merge_config(LogMel().config(), cfg)).config()
    except TypeError as e:
        raise UserError(f"bad front-end config: {e}") from None


def _check_same_features(frontend: dict[str, Any] | None, train_dir: str, dev_dir: str
                         ) -> None:
    from .extract import FBANK_CONF, load_frontend_config

    conf = os.path.join(dev_dir, FBANK_CONF)
    if frontend is not None and os.path.isfile(conf) and \
            _full_frontend(load_frontend_config(conf)) != frontend:
        raise UserError(f"{conf} differs from {os.path.join(train_dir, FBANK_CONF)}: dev "
                        "features must be computed like the training features "
                        f"('blspeech compute-feats {dev_dir} --config "
                        f"{os.path.join(train_dir, FBANK_CONF)}')")


def _global_cmvn(train_dir: str, feat_dim: int, norm_vars: bool
                 ) -> tuple[torch.Tensor, CMVN]:
    from .kaldi import KaldiFormatError, read_matrix

    path = os.path.join(train_dir, "global_cmvn")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found (config data.cmvn is global): run 'blspeech "
                        f"compute-cmvn {train_dir}', or set data.cmvn to none")
    try:
        stats = np.asarray(read_matrix(path), dtype=np.float64)
        module = CMVN.from_stats(stats, norm_vars=norm_vars)
    except (KaldiFormatError, ValueError) as e:
        raise UserError(f"{path}: {e}") from None
    if module.dim != feat_dim:
        raise UserError(f"{path} has dim {module.dim} but the features have {feat_dim}; "
                        f"rerun 'blspeech compute-cmvn {train_dir}'")
    return torch.from_numpy(stats), module


def _encode(ds: SpeechDataset, tok: Tokenizer, norm: TextNormalizer) -> dict[str, list[int]]:
    return {u: tok.encode(norm(text or "")) for u, text in zip(ds.utts, ds.texts, strict=True)}


def _build_model(section: dict[str, Any], feat_dim: int, vocab_size: int) -> CTCModel:
    from .models import build_model

    options = {k: v for k, v in section.items() if k != "name"}
    options.setdefault("num_mel_bins", feat_dim)
    if options["num_mel_bins"] != feat_dim:
        raise UserError(f"config model.num_mel_bins is {options['num_mel_bins']} but the "
                        f"features have {feat_dim} dimensions; remove it or make them match")
    try:
        encoder = build_model(section["name"], **options)
    except (ValueError, TypeError, AssertionError) as e:
        raise UserError(f"config model: cannot build {section['name']}: "
                        f"{str(e).splitlines()[0]}") from None
    if not hasattr(encoder, "output_size"):
        raise UserError(f"config model.name {section['name']!r} is not a speech encoder; use "
                        "one of the *_am_*, quartznet_* or conformer_* models")
    return CTCModel(encoder, vocab_size)


def _checkpoint_to_resume(prep: Prepared) -> dict[str, Any] | None:
    from .train_ckpt import numbered

    path = os.path.join(prep.exp_dir, "last.pt")
    if not os.path.exists(path):
        if numbered(prep.exp_dir, "epoch") or numbered(prep.exp_dir, "checkpoint"):
            # Starting over would mix this run's files with the old ones (pruning, averaging).
            raise UserError(f"{prep.exp_dir} holds checkpoints but no last.pt to resume from; "
                            "link the one to continue to last.pt, or pass --no-resume to "
                            "delete them and start over")
        return None
    try:
        ckpt = load_checkpoint(path)
    except ValueError as e:
        raise UserError(f"{e}; delete it or pass --no-resume to start over") from None
    if ckpt.get("optimizer") is None or "loader" not in ckpt:
        raise UserError(f"{path} is not a training checkpoint of 'blspeech train'; use "
                        "another --exp-dir or --no-resume")
    fix = "pass the tokenizer dir it was trained with, or a new --exp-dir"
    if ckpt.get("tokenizer") != prep.tokenizer.to_dict():
        theirs = ckpt["model_config"].get("vocab_size")
        raise UserError(f"{path} was trained with another tokenizer (vocab size {theirs}) than "
                        f"the one given (vocab size {prep.tokenizer.vocab_size}); {fix}")
    if ckpt.get("normalizer") != prep.normalizer.to_dict():
        raise UserError(f"{path} was trained with text normalization "
                        f"{ckpt.get('normalizer')}, the tokenizer dir has "
                        f"{prep.normalizer.to_dict()}; {fix}")
    if ckpt["model_config"] != prep.model.config:
        old_enc, new_enc = ckpt["model_config"].get("encoder", {}), prep.model.config["encoder"]
        diff = sorted(k for k in set(old_enc) | set(new_enc) if old_enc.get(k) != new_enc.get(k))
        what = (f"options {', '.join(diff)} differ" if old_enc.get("name") == new_enc["name"]
                else f"the config builds {new_enc['name']}")
        if not diff:
            what = f"vocab size {ckpt['model_config'].get('vocab_size')} differs"
        raise UserError(f"{path} holds a {old_enc.get('name')} model but {what}; resume with "
                        "the same model section or use a new --exp-dir")
    old = ckpt.get("config") or {}
    for key in ("source", "cmvn"):
        if old.get("data", {}).get(key) != prep.cfg["data"][key]:
            raise UserError(f"{path} was trained with data.{key} "
                            f"{old.get('data', {}).get(key)!r}; resume with the same setting")
    if old.get("optim", {}).get("name") != prep.cfg["optim"]["name"]:
        raise UserError(f"{path} was trained with optim.name {old['optim']['name']!r}; resume "
                        "with the same optimizer")
    if ckpt["loader"] and ckpt["loader"]["epoch"] == ckpt["epoch"]:
        # Saved mid-epoch: continue right after the batches done (the sampler refuses a
        # different seed or world size here, whose batches would differ).
        prep.train_loader.load_state_dict(ckpt["loader"])
    return ckpt
