"""Inputs of ``blspeech train``: configs (defaults, YAML, ``--set`` overrides) and tokenizer dirs.

A config is a plain dict with seven sections (the YAML file gives any subset; the rest are
the :data:`DEFAULTS`)::

    model:     {name: bl_resnet_am_small, <any option of that registry model>}
    head:      {type: ctc|hybrid, num_pdfs, topology, ali_subsampling, length_tolerance,
                label_smoothing}   # all but type are for the hybrid head
    data:      {source: feats|audio, cmvn: none|global|speaker|utterance, norm_vars,
                max_frames, buckets, pad_multiple, sorted_epochs, num_workers, frontend}
    specaug:   {freq_masks, freq_width, time_masks, time_width, time_max_proportion,
                time_warp, mask_value}   # or null: no SpecAugment
    optim:     {name: adamw|sgd, lr, weight_decay, betas, momentum}
    schedule:  {name: warmup_cosine|noam, warmup_steps, min_lr_ratio}
    training:  {epochs, grad_clip, amp: none|bf16|fp16, accum_grad, seed, loss_norm,
                log_interval, save_every_n_steps, keep_last_n, average_last_n,
                early_stopping_patience, select_by: dev_loss|dev_wer, max_steps,
                channels_last, init_encoder}

``model.num_mel_bins`` defaults to the feature dimension of the training data. Speed
perturbation is done on the data dir beforehand (``blspeech perturb-speed``). Unknown
keys and bad values raise :class:`~blspeech.errors.UserError` with one line that names
the key and lists the valid ones. Packaged example configs (``ctc_tiny``, ``ctc_small``)
live in ``blspeech/configs/`` and can be named instead of a path.

A tokenizer dir (``blspeech train-tokenizer``, :func:`train_tokenizer_for`) holds
``tokenizer.pt`` (``{"tokenizer": tok.to_dict(), "normalizer": norm.to_dict()}``, loadable
with ``torch.load(weights_only=True)``), ``tokens.txt`` and, for BPE, ``bpe.model``.

Example:
    >>> cfg = build_config({"model": {"name": "quartznet_tiny"}},
    ...                    {"training.epochs": 3, "specaug": None})
    >>> cfg["training"]["epochs"], cfg["specaug"], cfg["optim"]["name"]
    (3, None, 'adamw')
    >>> build_config(overrides={"optim.lr": "1e-3"})["optim"]["lr"]  # YAML 1.1 gives a str
    0.001
    >>> build_config({}, {"training.epoch": 3})
    Traceback (most recent call last):
    ...
    blspeech.errors.UserError: unknown config key 'training.epoch'; valid keys in training: ...
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import yaml

from blspeech.errors import UserError
from blspeech.text.tokenizers import TextNormalizer, Tokenizer, tokenizer_from_dict, train_tokenizer

#: Every config key and its default. ``model`` also takes the registry model's options.
DEFAULTS: dict[str, Any] = {
    "model": {"name": "bl_resnet_am_small"},
    "head": {
        "type": "ctc",            # ctc: tokens from --tokenizer-dir; hybrid: pdfs from --*-ali
        "num_pdfs": 0,            # hybrid: 0 = the largest pdf-id in the alignments + 1
        "topology": None,         # hybrid: null (Kaldi tree pdfs) or token (blspeech align)
        "ali_subsampling": 1,     # hybrid: feature frames per alignment frame
        "length_tolerance": 2,    # hybrid: alignment frames an utterance may be off by
        "label_smoothing": 0.0,   # hybrid: cross-entropy label smoothing
    },
    "data": {
        "source": "feats",        # feats: DIR/feats.scp; audio: log-mel on the fly from wav.scp
        "cmvn": "global",         # global stats of the *training* dir, applied to train and dev
        "norm_vars": True,
        "max_frames": 20000,      # padded frames per batch and rank (longest x count)
        "buckets": 10,
        "pad_multiple": 1,        # batch lengths padded to a multiple: fewer distinct shapes
        "sorted_epochs": 0,       # SortaGrad: first N epochs' batches shortest first
        "num_workers": 2,
        "frontend": None,         # LogMel options; default DIR/conf/fbank.yaml of train dir
    },
    "specaug": {"freq_masks": 2, "freq_width": 10, "time_masks": 2, "time_width": 40,
                "time_max_proportion": 0.2, "time_warp": 0, "mask_value": 0.0},
    "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "betas": [0.9, 0.98],
              "momentum": 0.9},
    "schedule": {"name": "warmup_cosine", "warmup_steps": 500, "min_lr_ratio": 0.01},
    "training": {
        "epochs": 30,
        "grad_clip": 5.0,                # max global gradient norm (0: no clipping)
        "amp": "none",                   # none | bf16 (CPU or CUDA) | fp16 (CUDA, GradScaler)
        "accum_grad": 1,                 # batches per optimizer step and rank
        "seed": 0,
        "loss_norm": "utterance",        # CTC sum divided by utterances or output frames
        "log_interval": 50,              # steps between log lines / TensorBoard points
        "save_every_n_steps": 0,         # step checkpoints (0: only at epoch ends)
        "keep_last_n": 3,                # step checkpoints kept
        "average_last_n": 5,             # epoch checkpoints averaged into avg_last_N.pt
        "early_stopping_patience": 0,    # epochs without improvement before stopping (0: off)
        "select_by": "dev_loss",         # metric for best.pt and early stopping
        "max_steps": 0,                  # stop after this many optimizer steps (0: no limit)
        "channels_last": False,          # 2-D conv weights and activations in NHWC layout
        "init_encoder": None,            # checkpoint whose encoder weights start the run
    },
}

SECTIONS = tuple(DEFAULTS)
SCHEDULES = ("warmup_cosine", "noam")
CONFIG_DIR = "configs"


def _int(lo: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo
        return None if ok else f"must be an integer >= {lo}"
    return check


def _float(lo: float, hi: float | None = None, lo_open: bool = False
           ) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        num = isinstance(v, int | float) and not isinstance(v, bool)
        ok = num and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        return None if ok else f"must be a number {rng}"
    return check


def _choice(*options: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _betas(v: Any) -> str | None:
    ok = (isinstance(v, list | tuple) and len(v) == 2
          and all(isinstance(b, int | float) and 0 <= b < 1 for b in v))
    return None if ok else "must be a list of two numbers in [0, 1), e.g. [0.9, 0.98]"


def _frontend(v: Any) -> str | None:
    return None if v is None or isinstance(v, dict | str) else \
        "must be null, a mapping of LogMel options or the path of a YAML file"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "head.type": _choice("ctc", "hybrid"),
    "head.num_pdfs": _int(0),
    "head.topology": lambda v: None if v in (None, "token") else "must be null or token",
    "head.ali_subsampling": _int(1),
    "head.length_tolerance": _int(0),
    "head.label_smoothing": _float(0.0, 0.99),
    "data.source": _choice("feats", "audio"),
    "data.cmvn": _choice("none", "global", "speaker", "utterance"),
    "data.norm_vars": _bool,
    "data.max_frames": _int(1),
    "data.buckets": _int(1),
    "data.pad_multiple": _int(1),
    "data.sorted_epochs": _int(0),
    "data.num_workers": _int(0),
    "data.frontend": _frontend,
    "specaug.freq_masks": _int(0),
    "specaug.freq_width": _int(0),
    "specaug.time_masks": _int(0),
    "specaug.time_width": _int(0),
    "specaug.time_max_proportion": _float(0.0, 1.0),
    "specaug.time_warp": _int(0),
    "specaug.mask_value": _float(-1e30),
    "optim.name": _choice("adamw", "sgd"),
    "optim.lr": _float(0.0, lo_open=True),
    "optim.weight_decay": _float(0.0),
    "optim.betas": _betas,
    "optim.momentum": _float(0.0, 1.0),
    "schedule.name": _choice(*SCHEDULES),
    "schedule.warmup_steps": _int(0),
    "schedule.min_lr_ratio": _float(0.0, 1.0),
    "training.epochs": _int(1),
    "training.grad_clip": _float(0.0),
    "training.amp": _choice("none", "bf16", "fp16"),
    "training.accum_grad": _int(1),
    "training.seed": _int(0),
    "training.loss_norm": _choice("utterance", "frame"),
    "training.log_interval": _int(1),
    "training.save_every_n_steps": _int(0),
    "training.keep_last_n": _int(1),
    "training.average_last_n": _int(0),
    "training.early_stopping_patience": _int(0),
    "training.select_by": _choice("dev_loss", "dev_wer"),
    "training.max_steps": _int(0),
    "training.channels_last": _bool,
    "training.init_encoder": lambda v: None if v is None or isinstance(v, str) else
    "must be null or the path of a 'blspeech train' checkpoint",
}


def packaged_configs() -> list[str]:
    """Names of the example configs shipped in ``blspeech/configs`` (``ctc_tiny``, ...)."""
    folder = resources.files("blspeech") / CONFIG_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a dict; a bare name like ``ctc_small`` picks a packaged one."""
    path = os.fspath(path)
    if not os.path.exists(path) and path in packaged_configs():
        text = (resources.files("blspeech") / CONFIG_DIR / f"{path}.yaml").read_text("utf-8")
        where = f"packaged config {path}"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UserError(f"cannot read config {path}: {e.strerror}; give a YAML file or "
                            f"one of the packaged configs: {', '.join(packaged_configs())}"
                            ) from e
        where = path
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}")
    return loaded


def build_config(base: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, updated by ``base`` (a parsed YAML file), then by dotted ``overrides``.

    ``overrides`` maps ``section.key`` (or a whole ``section``) to a value, as
    ``--set training.epochs=5`` gives. The result is validated with :func:`check_config`.
    """
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in (base or {}).items():
        _set(cfg, str(section), values)
    for key, value in (overrides or {}).items():
        _set(cfg, str(key), value)
    check_config(cfg)
    return cfg


def _valid_keys(section: str) -> str:
    return ", ".join(DEFAULTS[section])


def _set(cfg: dict[str, Any], key: str, value: Any) -> None:
    section, _, sub = key.partition(".")
    if section not in DEFAULTS:
        raise UserError(f"unknown config key {key!r}; valid sections: {', '.join(SECTIONS)}")
    if not sub:  # a whole section
        if section == "specaug" and value is None:
            cfg["specaug"] = None
            return
        if not isinstance(value, dict):
            null = " (or null to disable it)" if section == "specaug" else ""
            raise UserError(f"config section {section!r} must be a mapping{null}, "
                            f"got {value!r}")
        for k, v in value.items():
            _set(cfg, f"{section}.{k}", v)
        return
    if "." in sub:
        raise UserError(f"unknown config key {key!r}: keys have the form section.key")
    if section != "model" and sub not in DEFAULTS[section]:
        raise UserError(f"unknown config key {key!r}; valid keys in {section}: "
                        f"{_valid_keys(section)}")
    if cfg.get(section) is None:  # specaug was disabled; a key turns it back on
        cfg[section] = copy.deepcopy(DEFAULTS[section])
    default = DEFAULTS[section].get(sub)
    if isinstance(value, str) and isinstance(default, float):
        # YAML 1.1 reads 1e-3 (no dot, no sign in the exponent) as a string.
        with contextlib.suppress(ValueError):
            value = float(value)
    cfg[section][sub] = value


def check_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`UserError` naming the first bad value (model options are checked when
    the model is built)."""
    name = cfg["model"].get("name")
    if not isinstance(name, str):
        raise UserError("config model.name must be a registered model name, e.g. "
                        "bl_resnet_am_small (see 'blspeech list-models')")
    for key, check in _CHECKS.items():
        section, sub = key.split(".")
        if cfg[section] is None:
            continue
        problem = check(cfg[section][sub])
        if problem:
            raise UserError(f"config {key}: {problem}, got {cfg[section][sub]!r}")
    if cfg["head"]["type"] == "hybrid" and cfg["training"]["select_by"] == "dev_wer":
        raise UserError("config training.select_by dev_wer needs head.type ctc (the hybrid "
                        "head reports dev_loss and dev_frame_acc); use dev_loss")
    if cfg["schedule"]["warmup_steps"] == 0 and cfg["schedule"]["name"] == "noam":
        raise UserError("config schedule.warmup_steps: noam needs warmup_steps >= 1")


def plain(value: Any) -> Any:
    """``value`` with tuples as lists, for checkpoints (``weights_only``) and JSON."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two full configs (for resume warnings).

    Example:
        >>> a = build_config(); b = build_config(overrides={"optim.lr": 0.01})
        >>> config_diff(a, b)
        ['optim.lr']
    """
    out = []
    for section in SECTIONS:
        a, b = old.get(section), new.get(section)
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            if plain(a) != plain(b):
                out.append(section)
            continue
        for key in sorted(set(a) | set(b)):
            if plain(a.get(key)) != plain(b.get(key)):
                out.append(f"{section}.{key}")
    return out


# --- tokenizer dirs ------------------------------------------------------------------------

TOKENIZER_FILE = "tokenizer.pt"


def train_tokenizer_for(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        kind: str = "bpe", vocab_size: int = 256, case: str = "keep",
                        remove_punctuation: bool = False) -> dict[str, Any]:
    """Normalize ``data_dir/text``, train a tokenizer on it and write a tokenizer dir.

    Writes ``out_dir/tokens.txt``, ``out_dir/bpe.model`` (BPE only) and
    ``out_dir/tokenizer.pt``; returns a summary (kind, vocab size, files).

    Example:
        >>> train_tokenizer_for("data/train", "data/lang_char", kind="char",
        ...                     case="lower")                            # doctest: +SKIP
        {'kind': 'char', 'vocab_size': 31, ...}
    """
    import torch

    from blspeech.io.fileio import atomic_write
    from blspeech.io.kaldi import read_table

    text_path = os.path.join(os.fspath(data_dir), "text")
    if not os.path.isfile(text_path):
        raise UserError(f"{text_path} not found: a tokenizer is trained on a data dir's "
                        "transcripts")
    norm = TextNormalizer(case=case, remove_punctuation=remove_punctuation)
    texts = [norm(e.value) for e in read_table(text_path, allow_empty_value=True).values()]
    if not any(texts):
        raise UserError(f"{text_path} has no transcript text")
    if kind == "bpe" and vocab_size < 3:
        raise UserError(f"--vocab-size must be >= 3 for BPE, got {vocab_size}")
    tok = train_tokenizer(texts, kind, vocab_size)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    files = [os.path.join(out, "tokens.txt")]
    tok.write_tokens(files[0])
    if kind == "bpe":
        files.append(os.path.join(out, "bpe.model"))
        tok.save_model(files[-1])
    files.append(os.path.join(out, TOKENIZER_FILE))
    with atomic_write(files[-1], "wb") as f:  # last: its presence means the dir is complete
        torch.save({"tokenizer": tok.to_dict(), "normalizer": norm.to_dict()}, f)
    return {"kind": tok.kind, "vocab_size": tok.vocab_size, "utterances": len(texts),
            "normalizer": norm.to_dict(), "files": files}


def load_tokenizer_dir(path: str | os.PathLike) -> tuple[Tokenizer, TextNormalizer]:
    """The tokenizer and text normalizer stored in a tokenizer dir (``tokenizer.pt``)."""
    from blspeech.io.checkpoint import safe_torch_load

    path = os.fspath(path)
    file = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isdir(path):
        raise UserError(f"tokenizer dir {path} does not exist; create it with 'blspeech "
                        f"train-tokenizer DATA_DIR {path}'")
    if not os.path.isfile(file):
        raise UserError(f"{file} not found; create the tokenizer dir with 'blspeech "
                        f"train-tokenizer DATA_DIR {path}'")
    d = safe_torch_load(file, "tokenizer file")
    try:
        tok = tokenizer_from_dict(d["tokenizer"])
        norm = TextNormalizer(**d["normalizer"])
    except UserError:
        raise
    except Exception as e:  # corrupt file, wrong layout
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{file} is not a blspeech tokenizer file: {first}") from e
    return tok, norm
