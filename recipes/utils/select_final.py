#!/usr/bin/env python3
"""Make EXP_DIR/final.pt: the one of best.pt and avg_last_N.pt with the better dev metric.

Usage: recipes/utils/select_final.py EXP_DIR [dev_wer|dev_loss]

Both checkpoints record their dev metrics (written by 'blspeech train'); the lower value
wins (dev_wer by default; dev_loss for hybrid models, which have no dev WER), a tie keeps
the averaged model. The copy is written under a temporary name and renamed. Prints the
choice.
"""

from __future__ import annotations

import glob
import os
import sys

from blspeech.io.checkpoint import copy_checkpoint, load_checkpoint

METRICS = ("dev_wer", "dev_loss")


def main() -> int:
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in METRICS):
        print("usage: " + __doc__.strip().splitlines()[2].split(": ", 1)[1], file=sys.stderr)
        return 2
    exp = sys.argv[1]
    metric = sys.argv[2] if len(sys.argv) == 3 else "dev_wer"
    candidates = sorted(glob.glob(os.path.join(exp, "avg_last_*.pt")))
    candidates.append(os.path.join(exp, "best.pt"))
    scored = []
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            value = (load_checkpoint(path).get("metrics") or {}).get(metric)
        except ValueError as e:  # missing, corrupt or foreign: one line naming the file
            print(f"{sys.argv[0]}: {e}", file=sys.stderr)
            return 2
        if value is not None:
            scored.append((value, len(scored), path))
    if not scored:
        print(f"{sys.argv[0]}: {exp} has no best.pt or avg_last_N.pt with a {metric}; "
              "train first", file=sys.stderr)
        return 2
    value, _, path = min(scored)
    copy_checkpoint(path, os.path.join(exp, "final.pt"))
    shown = f"{value:.2f}%" if metric == "dev_wer" else f"{value:.4f}"
    print(f"{exp}/final.pt = {os.path.basename(path)} ({metric.replace('_', ' ')} {shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
