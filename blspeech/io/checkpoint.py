"""Training checkpoints: atomic saves, safe loads, RNG state capture.

A checkpoint is a plain dict that :func:`torch.load` reads with ``weights_only=True`` (no
pickled code runs): tensors, numbers, strings, lists and dicts only. Keys written by
:func:`make_checkpoint`:

* ``model``: the state_dict (DDP's ``module.`` prefix removed),
* ``model_config``: ``model.config``, enough for ``build_model_from_config``,
* ``optimizer``, ``scheduler``, ``scaler``: their state_dicts (``None`` when absent),
* ``epoch`` (completed epochs), ``step`` (optimizer steps), ``best_metric``,
* ``rng``: per-rank RNG states from :func:`capture_rng_state`,
* anything passed as ``extra`` (class names, training arguments, ...).

Example:
    >>> save_checkpoint("exp/last.pt", make_checkpoint(model, epoch=3))  # doctest: +SKIP
    >>> ckpt = load_checkpoint("exp/last.pt")                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write, disk_full_is_user_error

FORMAT_VERSION = 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP/DataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and current CUDA device), Python ``random`` and numpy.

    Everything is stored as tensors, ints, floats, lists and ``None`` so that the dict
    survives ``torch.load(weights_only=True)``, which refuses numpy arrays and most objects.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
        "cuda": None,
    }
    # Current device only: get_rng_state_all() would create a context on every GPU from
    # every process.
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`: later random draws repeat the captured ones."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].cpu().numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def make_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    *,
    epoch: int = 0,
    step: int = 0,
    best_metric: float | None = None,
    rng: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect everything needed to resume training into one weights_only-loadable dict.

    ``rng`` is a list of :func:`capture_rng_state` results indexed by rank (default: this
    process's state only).
    """
    bare = unwrap_model(model)
    config = getattr(bare, "config", None)
    if config is None:
        raise ValueError("model has no .config; build it with blspeech.models.build_model")
    ckpt: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": bare.state_dict(),
        "model_config": dict(config),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "best_metric": None if best_metric is None else float(best_metric),
        "rng": list(rng) if rng is not None else [capture_rng_state()],
    }
    ckpt.update(extra or {})
    return ckpt


def save_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> None:
    """Write ``checkpoint`` atomically: readers see the old file or the new one, never half.

    The data goes to a temporary file in the same directory, is fsynced, then renamed over
    ``path``; the directory is fsynced too so that the rename survives a power loss.
    """
    with disk_full_is_user_error(path, "training resumes from the last complete "
                                 "checkpoint"), atomic_write(path, "wb") as f:
        torch.save(dict(checkpoint), f)
    _fsync_dir(os.path.dirname(os.path.abspath(os.fspath(path))))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Atomically make ``dst`` a copy of ``src`` (e.g. best.pt from last.pt).

    A hard link costs no I/O; it stays valid after ``src`` is replaced because
    :func:`save_checkpoint` renames a new file over ``src`` instead of rewriting it. Where
    hard links are not supported the bytes are copied.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    directory = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(dst)}.", suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def refused_objects(e: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` raised ``e`` because the file holds
    objects it refuses to build (a function to call, a foreign class), not because the
    data is corrupt: both are an UnpicklingError, and only a refusal names the pickle's
    GLOBAL (the opcode that imports them)."""
    return isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e)


def load_reason(e: BaseException) -> str:
    """Why ``torch.load`` failed, in one line of ours: never PyTorch's advice to re-run it
    with ``weights_only=False``, which would run whatever code the file holds."""
    if isinstance(e, pickle.UnpicklingError):  # torch wraps even garbage in that advice
        return "not a PyTorch file of tensors and plain values (unreadable pickle data)"
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return next((x for x in lines if "weights_only" not in x), type(e).__name__)[:200]


def load_error(path: str, e: BaseException, what: str) -> UserError:
    """One line of our own for a file ``torch.load(weights_only=True)`` refused or could
    not read (``what``: e.g. "checkpoint"), naming ``path``."""
    if refused_objects(e):
        return UserError(f"{path} is not a blspeech {what}: it holds Python objects other "
                         "than tensors and plain values, which may be unsafe to load; "
                         "refused (nothing in it was run)")
    return UserError(f"cannot read {what} {path}: {load_reason(e)}")


def safe_torch_load(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` (no pickled code runs); a file it refuses
    or cannot read raises :class:`UserError` from :func:`load_error`."""
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated/corrupt file, or objects weights_only refuses
        raise load_error(path, e, what) from e


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: (a :class:`UserError`) naming ``path`` when it is missing, unreadable,
            corrupt, holds pickled objects other than tensors/containers, or is not a
            training checkpoint dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    ckpt = safe_torch_load(path, "checkpoint", map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise UserError(f"{path} is not a blspeech training checkpoint "
                        "(expected a dict with 'model' and 'model_config')")
    return ckpt


def _fsync_dir(directory: str) -> None:
    # Not possible on every OS/filesystem (e.g. Windows); the data itself is already synced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
