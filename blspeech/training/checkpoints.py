"""Checkpoint files of a ``blspeech train`` run: naming, pruning, starting over, averaging.

In ``exp_dir``: ``epoch-N.pt`` after epoch N, ``checkpoint-STEP.pt`` every
``save_every_n_steps`` optimizer steps, ``last.pt`` (a hard link to the newest of them),
``best.pt`` (a link to the best epoch) and ``avg_last_N.pt`` (weights averaged over the
last N epochs, from :func:`average_checkpoints`).

Example:
    >>> avg = average_checkpoints(["exp/epoch-9.pt", "exp/epoch-10.pt"])  # doctest: +SKIP
    >>> model.load_state_dict(avg)                                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from collections.abc import Sequence

import torch

from blspeech.errors import UserError
from blspeech.io.checkpoint import load_checkpoint

#: ``kind-NUMBER.pt`` files that :func:`prune` manages.
KINDS = ("epoch", "checkpoint")


def numbered(exp_dir: str, kind: str) -> list[tuple[int, str]]:
    """``(number, path)`` of the ``kind-NUMBER.pt`` files in ``exp_dir``, ascending."""
    pattern = re.compile(rf"{kind}-(\d+)\.pt$")
    return sorted((int(m.group(1)), f) for f in glob.glob(os.path.join(exp_dir, "*.pt"))
                  if (m := pattern.fullmatch(os.path.basename(f))))


def prune(exp_dir: str, kind: str, keep: int) -> None:
    """Delete all but the newest ``keep`` ``kind-NUMBER.pt`` files (links stay valid)."""
    for _, path in numbered(exp_dir, kind)[:-keep] if keep > 0 else numbered(exp_dir, kind):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def remove_old_run(exp_dir: str) -> None:
    """Delete an earlier run's checkpoints and metrics before starting over in ``exp_dir``."""
    old = [path for kind in KINDS for _, path in numbered(exp_dir, kind)]
    old += [f for f in glob.glob(os.path.join(exp_dir, "*.pt"))
            if os.path.basename(f) in ("last.pt", "best.pt")
            or re.fullmatch(r"avg_last_\d+\.pt", os.path.basename(f))]
    for path in old + [os.path.join(exp_dir, "metrics.jsonl")]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    if old:
        print(f"blspeech train: starting over in {exp_dir}: removed {len(old)} "
              "checkpoint(s) of an earlier run", file=sys.stderr, flush=True)


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``model`` state_dicts of several checkpoints.

    Floating tensors are averaged in float64 and cast back; integer ones (BatchNorm's
    ``num_batches_tracked``) get the floor of their mean, as icefall does.

    Raises ValueError when the checkpoints hold different models.
    """
    if not paths:
        raise UserError("average_checkpoints needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    first_config = None
    for path in paths:
        ckpt = load_checkpoint(path)
        if first_config is None:
            first_config = ckpt["model_config"]
        elif ckpt["model_config"] != first_config:
            raise UserError(f"{path} holds another model than {paths[0]}; cannot average")
        state = ckpt["model"]
        if total and set(state) != set(total):
            raise UserError(f"{path} has other parameters than {paths[0]}; cannot average")
        for key, value in state.items():
            dtypes[key] = value.dtype
            acc = value.double() if value.is_floating_point() else value.long()
            total[key] = total[key] + acc if key in total else acc.clone()
    n = len(paths)
    return {key: (value / n).to(dtypes[key]) if dtypes[key].is_floating_point
            else torch.div(value, n, rounding_mode="floor").to(dtypes[key])
            for key, value in total.items()}
