"""What ``blspeech train`` builds before training: data, batches, model, LR schedule, the
checkpoint to resume.

:func:`prepare` does every check that can fail on user input (paths, features, CMVN
stats, tokenizer, model options, the checkpoint to resume) before any process group
exists, so under torchrun every rank stops with the same one-line error instead of one
rank hanging in a collective. :mod:`blspeech.training.trainer` then only trains.

Example:
    >>> from blspeech.training.config import build_config
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

from blspeech.data.speech import (
    BucketingBatchSampler,
    SpeechDataLoader,
    SpeechDataset,
    make_dataloader,
)
from blspeech.errors import UserError
from blspeech.frontend.features import CMVN, LogMel, SpecAugment, merge_config
from blspeech.io.checkpoint import load_checkpoint
from blspeech.models.asr import CTCModel, HybridModel
from blspeech.text.tokenizers import TextNormalizer, Tokenizer
from blspeech.training import distributed as dist_utils
from blspeech.training.common import seed_everything
from blspeech.training.config import load_tokenizer_dir, plain
from blspeech.training.optim import build_scheduler


@dataclass
class Prepared:
    """Everything a training run needs, built and checked (see :func:`prepare`)."""

    cfg: dict[str, Any]
    exp_dir: str
    tokenizer: Tokenizer | None      # None: a hybrid head over a Kaldi tree's pdfs
    normalizer: TextNormalizer | None
    train_ds: SpeechDataset
    dev_ds: SpeechDataset
    sampler: BucketingBatchSampler
    train_loader: SpeechDataLoader
    dev_loader: SpeechDataLoader
    targets: dict[str, Any]          # CTC: token ids; hybrid: pdf alignments (np.int32)
    dev_targets: dict[str, Any]
    dev_refs: dict[str, str]
    frontend: dict[str, Any] | None
    cmvn_stats: torch.Tensor | None
    cmvn_module: CMVN | None
    specaug: SpecAugment | None
    model: CTCModel | HybridModel
    ckpt: dict[str, Any] | None
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int

    def inference_payload(self) -> dict[str, Any]:
        """The checkpoint keys that decoding needs besides the weights."""
        d = self.cfg["data"]
        return {"tokenizer": None if self.tokenizer is None else self.tokenizer.to_dict(),
                "normalizer": None if self.normalizer is None else self.normalizer.to_dict(),
                "frontend": None if self.frontend is None else dict(self.frontend),
                "cmvn": {"mode": d["cmvn"], "stats": self.cmvn_stats,
                         "norm_vars": d["norm_vars"]},
                "data_source": d["source"], "config": plain(self.cfg)}


def prepare(cfg: dict[str, Any], train_dir: str, dev_dir: str, tokenizer_dir: str | None,
            exp_dir: str, device: str | None, resume: bool, train_ali: str | None = None,
            dev_ali: str | None = None) -> Prepared:
    """Check the inputs of a training run and build its data, model and resume state.

    A CTC head needs ``tokenizer_dir``; a hybrid head needs ``train_ali`` and ``dev_ali``
    (int-vector rspecifiers of pdf-ids) and, for the token topology, ``tokenizer_dir``.
    """
    rank, world, local_rank = dist_utils.env_ranks()
    t, d, head = cfg["training"], cfg["data"], cfg["head"]
    hybrid = head["type"] == "hybrid"
    dev = _check_run_inputs(cfg, device, local_rank, tokenizer_dir, train_ali, dev_ali)
    tok, norm = load_tokenizer_dir(tokenizer_dir) if tokenizer_dir else (None, None)
    train_ds, dev_ds, frontend = _datasets(d, train_dir, dev_dir)
    stats, cmvn_module = None, None
    if d["cmvn"] == "global":
        stats, cmvn_module = _global_cmvn(train_dir, train_ds.feat_dim, d["norm_vars"])

    if hybrid:
        train_ds, dev_ds, targets, dev_targets, num_pdfs = _alignments(
            head, tok, train_ds, dev_ds, train_ali, dev_ali)
        dev_refs: dict[str, str] = {}
    else:
        targets = _encode(train_ds, tok, norm)
        dev_targets = _encode(dev_ds, tok, norm)
        dev_refs = {u: norm(text or "")
                    for u, text in zip(dev_ds.utts, dev_ds.texts, strict=True)}
    seed_everything(t["seed"])  # the same initial weights on every rank and every run
    model = _build_model(cfg["model"], train_ds.feat_dim, head,
                         num_pdfs if hybrid else tok.vocab_size)
    if hybrid:
        _set_priors(model, head, train_ds, targets, num_pdfs)

    sampler = BucketingBatchSampler(train_ds.lengths, d["max_frames"], shuffle=True,
                                    seed=t["seed"], num_replicas=world, rank=rank,
                                    buckets=d["buckets"], pad_multiple=d["pad_multiple"],
                                    sorted_epochs=d["sorted_epochs"])
    batches_per_epoch = len(sampler)
    if batches_per_epoch == 0:
        raise UserError(f"{train_dir} gives no training batches")
    pin = dev.type == "cuda"
    train_loader = make_dataloader(train_ds, sampler, d["num_workers"], pin, seed=t["seed"])
    # Dev batches: length order, packed greedily (one bucket: least padding), every
    # world-th batch per rank and no repeats (a repeated batch would count twice).
    dev_batches = BucketingBatchSampler(dev_ds.lengths, d["max_frames"], shuffle=False,
                                        num_replicas=1, rank=0, buckets=1,
                                        pad_multiple=d["pad_multiple"]
                                        ).global_batches()[rank::world]
    dev_loader = make_dataloader(dev_ds, dev_batches, d["num_workers"], pin, seed=t["seed"],
                                 pad_multiple=d["pad_multiple"])
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
    if prep.ckpt is None and t["init_encoder"]:  # a resumed run has its own weights
        init_encoder(model, t["init_encoder"])
    return prep


def init_encoder(model: CTCModel | HybridModel, path: str) -> None:
    """Copy the encoder weights of the checkpoint ``path`` into ``model.encoder``.

    ESPnet's ``--init_param`` for the encoder: a hybrid head can start from a CTC model's
    encoder (or the reverse); the head keeps its fresh initialization. The encoders must
    be built alike (same registry name and shape options).
    """
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        raise UserError(f"training.init_encoder: {e}") from None
    source = (ckpt["model_config"] or {}).get("encoder", {}).get("name")
    target = model.encoder.config.get("name")
    if source != target:
        raise UserError(f"training.init_encoder: {path} holds a {source or 'non-speech'} "
                        f"encoder, but this run trains {target}; name a checkpoint of the "
                        "same model")
    prefix = "encoder."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    try:
        model.encoder.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"training.init_encoder: the encoder weights of {path} do not fit "
                        f"this run's {target} (different model options?): {first}") from None


def _check_run_inputs(cfg: Mapping[str, Any], device: str | None, local_rank: int,
                      tokenizer_dir: str | None, train_ali: str | None,
                      dev_ali: str | None) -> torch.device:
    """The device to train on, after the checks of what the head needs."""
    t, head = cfg["training"], cfg["head"]
    hybrid = head["type"] == "hybrid"
    try:
        dev = dist_utils.resolve_device(device, local_rank)
    except ValueError as e:
        raise UserError(str(e)) from e
    if t["amp"] == "fp16" and dev.type != "cuda":
        raise UserError("config training.amp fp16 needs --device cuda; use bf16 on the CPU")
    if hybrid and not (train_ali and dev_ali):
        raise UserError("head.type hybrid trains on alignments: give --train-ali and --dev-ali "
                        "(e.g. 'ark:gunzip -c exp/tri4_ali/ali.*.gz | ali-to-pdf "
                        "exp/tri4_ali/final.mdl ark:- ark:- |')")
    if not hybrid and (train_ali or dev_ali):
        raise UserError("--train-ali/--dev-ali are for head.type hybrid; the config's head is "
                        "ctc")
    if tokenizer_dir is None and (not hybrid or head["topology"] == "token"):
        what = "a CTC head" if not hybrid else "head.topology token"
        raise UserError(f"{what} needs --tokenizer-dir")
    return dev


def _datasets(d: Mapping[str, Any], train_dir: str, dev_dir: str
              ) -> tuple[SpeechDataset, SpeechDataset, dict[str, Any]]:
    """The train and dev datasets, read with the same front-end, and its settings."""
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
    if dev_ds.feat_dim != train_ds.feat_dim:
        raise UserError(f"{dev_dir} has {dev_ds.feat_dim}-dim features but {train_dir} has "
                        f"{train_ds.feat_dim}; compute both with the same front-end")
    return train_ds, dev_ds, frontend


def _set_priors(model: torch.nn.Module, head: Mapping[str, Any], train_ds: SpeechDataset,
                targets: Mapping[str, Any], num_pdfs: int) -> None:
    """A hybrid model's log state priors, counted from the training targets at its
    output frame rate."""
    from blspeech.data.alignments import log_priors

    sub = model.time_subsampling
    priors = log_priors([frame_targets_at_output(targets[u], n, sub, head)
                         for u, n in zip(train_ds.utts, train_ds.lengths, strict=True)],
                        num_pdfs)
    model.log_prior.copy_(priors)


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
    :func:`blspeech.training.optim.build_scheduler`, or :func:`noam`)."""
    if schedule["name"] == "noam":
        fn = functools.partial(noam, warmup_steps=schedule["warmup_steps"],
                               min_lr_ratio=schedule["min_lr_ratio"])
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    return build_scheduler(optimizer, schedule["warmup_steps"], total_steps,
                           schedule["min_lr_ratio"])


def _frontend(d: dict[str, Any], train_dir: str) -> dict[str, Any] | None:
    from blspeech.frontend.extract import FBANK_CONF, load_frontend_config

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
        raise UserError(f"bad front-end config: {e}") from e


def _check_same_features(frontend: dict[str, Any] | None, train_dir: str, dev_dir: str
                         ) -> None:
    from blspeech.frontend.extract import FBANK_CONF, load_frontend_config

    conf = os.path.join(dev_dir, FBANK_CONF)
    if frontend is not None and os.path.isfile(conf) and \
            _full_frontend(load_frontend_config(conf)) != frontend:
        raise UserError(f"{conf} differs from {os.path.join(train_dir, FBANK_CONF)}: dev "
                        "features must be computed like the training features "
                        f"('blspeech compute-feats {dev_dir} --config "
                        f"{os.path.join(train_dir, FBANK_CONF)}')")


def _global_cmvn(train_dir: str, feat_dim: int, norm_vars: bool
                 ) -> tuple[torch.Tensor, CMVN]:
    from blspeech.io.kaldi import KaldiFormatError, read_matrix

    path = os.path.join(train_dir, "global_cmvn")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found (config data.cmvn is global): run 'blspeech "
                        f"compute-cmvn {train_dir}', or set data.cmvn to none")
    try:
        stats = np.asarray(read_matrix(path), dtype=np.float64)
        module = CMVN.from_stats(stats, norm_vars=norm_vars)
    except (KaldiFormatError, ValueError) as e:
        raise UserError(f"{path}: {e}") from e
    if module.dim != feat_dim:
        raise UserError(f"{path} has dim {module.dim} but the features have {feat_dim}; "
                        f"rerun 'blspeech compute-cmvn {train_dir}'")
    return torch.from_numpy(stats), module


def frame_targets_at_output(ali: np.ndarray, frames: int, subsampling: int,
                            head: Mapping[str, Any]) -> np.ndarray:
    """An alignment's labels at the encoder's output rate for ``frames`` feature frames
    (``ceil(frames / subsampling)`` output frames, as the encoders' strides give)."""
    from blspeech.data.alignments import frame_targets

    return frame_targets(ali, -(-frames // subsampling), subsampling, head["ali_subsampling"])


def _alignments(head: Mapping[str, Any], tok: Tokenizer | None, train_ds: SpeechDataset,
                dev_ds: SpeechDataset, train_ali: str, dev_ali: str
                ) -> tuple[SpeechDataset, SpeechDataset, dict, dict, int]:
    """Read and check the hybrid head's alignments; datasets keep the aligned utterances."""
    from blspeech.data.alignments import alignment_summary, read_alignments, token_topology_pdfs

    num_pdfs = head["num_pdfs"] or None
    if head["topology"] == "token":
        need = token_topology_pdfs(tok.vocab_size)
        if num_pdfs not in (None, need):
            raise UserError(f"config head.num_pdfs is {num_pdfs} but the token topology of a "
                            f"{tok.vocab_size}-token vocabulary has {need} pdfs; remove it")
        num_pdfs = need
    out = []
    for ds, rspec in ((train_ds, train_ali), (dev_ds, dev_ali)):
        alis, missing = read_alignments(
            rspec, ds.utts, ds.lengths, ali_subsampling=head["ali_subsampling"],
            tolerance=head["length_tolerance"], num_pdfs=num_pdfs, where=ds.data_dir)
        alignment_summary(alis, missing, f"{ds.data_dir} with alignments {rspec}")
        out.append((ds.subset(list(alis)) if missing else ds, alis))
    (train_ds, targets), (dev_ds, dev_targets) = out
    if num_pdfs is None:
        num_pdfs = 1 + max(int(a.max()) for alis in (targets, dev_targets)
                           for a in alis.values() if len(a))
    return train_ds, dev_ds, targets, dev_targets, num_pdfs


def _encode(ds: SpeechDataset, tok: Tokenizer, norm: TextNormalizer) -> dict[str, list[int]]:
    return {u: tok.encode(norm(text or "")) for u, text in zip(ds.utts, ds.texts, strict=True)}


def _build_model(section: dict[str, Any], feat_dim: int, head: Mapping[str, Any],
                 size: int) -> CTCModel | HybridModel:
    """The encoder of the model section with the configured head of ``size`` outputs."""
    from blspeech.models import build_model

    options = {k: v for k, v in section.items() if k != "name"}
    options.setdefault("num_mel_bins", feat_dim)
    if options["num_mel_bins"] != feat_dim:
        raise UserError(f"config model.num_mel_bins is {options['num_mel_bins']} but the "
                        f"features have {feat_dim} dimensions; remove it or make them match")
    try:
        encoder = build_model(section["name"], **options)
    except (ValueError, TypeError, AssertionError) as e:
        raise UserError(f"config model: cannot build {section['name']}: "
                        f"{str(e).splitlines()[0]}") from e
    if not hasattr(encoder, "output_size"):
        raise UserError(f"config model.name {section['name']!r} is not a speech encoder; use "
                        "one of the *_am_*, quartznet_* or conformer_* models")
    if head["type"] == "hybrid":
        return HybridModel(encoder, size, head["topology"])
    return CTCModel(encoder, size)


def _checkpoint_to_resume(prep: Prepared) -> dict[str, Any] | None:
    from blspeech.training.checkpoints import numbered

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
        raise UserError(f"{e}; delete it or pass --no-resume to start over") from e
    if ckpt.get("optimizer") is None or "loader" not in ckpt:
        raise UserError(f"{path} is not a training checkpoint of 'blspeech train'; use "
                        "another --exp-dir or --no-resume")
    fix = "pass the tokenizer dir it was trained with, or a new --exp-dir"
    mine = None if prep.tokenizer is None else prep.tokenizer.to_dict()
    if ckpt.get("tokenizer") != mine:
        theirs = ("none" if ckpt.get("tokenizer") is None else
                  len((ckpt["tokenizer"] or {}).get("tokens", []))
                  or ckpt["model_config"].get("vocab_size"))
        raise UserError(f"{path} was trained with another tokenizer (vocab size {theirs}) than "
                        f"the one given (vocab size "
                        f"{'none' if prep.tokenizer is None else prep.tokenizer.vocab_size}); "
                        f"{fix}")
    mine_norm = None if prep.normalizer is None else prep.normalizer.to_dict()
    if ckpt.get("normalizer") != mine_norm:
        raise UserError(f"{path} was trained with text normalization "
                        f"{ckpt.get('normalizer')}, the tokenizer dir has {mine_norm}; {fix}")
    if ckpt["model_config"] != prep.model.config:
        old_enc, new_enc = ckpt["model_config"].get("encoder", {}), prep.model.config["encoder"]
        diff = sorted(k for k in set(old_enc) | set(new_enc) if old_enc.get(k) != new_enc.get(k))
        what = (f"options {', '.join(diff)} differ" if old_enc.get("name") == new_enc["name"]
                else f"the config builds {new_enc['name']}")
        if not diff:
            old_head = {k: v for k, v in ckpt["model_config"].items() if k != "encoder"}
            new_head = {k: v for k, v in prep.model.config.items() if k != "encoder"}
            what = ", ".join(f"{k} {old_head.get(k)} differs (now {new_head.get(k)})"
                             for k in sorted(set(old_head) | set(new_head))
                             if old_head.get(k) != new_head.get(k))
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
