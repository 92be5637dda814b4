"""Plumbing shared by the trainers (speech and vision): autocast, seeding, log lines that
do not tear progress bars, and the per-epoch ``metrics.jsonl`` file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
from typing import Any

import numpy as np
import torch
from tqdm import tqdm


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for ``--amp`` (a no-op context for ``none``)."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


class TqdmHandler(logging.Handler):
    # Log lines go through tqdm.write so they do not tear the progress bar.
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_metrics(path: str) -> list[dict[str, Any]]:
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                # A crash can leave a torn last line; it belongs to an unfinished epoch.
                with contextlib.suppress(json.JSONDecodeError):
                    rows.append(json.loads(line))
    return [r for r in rows if isinstance(r, dict)]


def rewrite_metrics(path: str, rows: list[dict[str, Any]]) -> None:
    # Drop lines of epochs that finished after the checkpoint we resume from (a crash
    # between the metrics line and the checkpoint), so epochs never appear twice.
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)


def append_metrics(path: str, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
