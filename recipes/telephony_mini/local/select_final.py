#!/usr/bin/env python3
"""Make EXP_DIR/final.pt: the one of best.pt and avg_last_N.pt with the lower dev WER.

Usage: local/select_final.py EXP_DIR

Both checkpoints record their dev metrics (written by 'blspeech train'); a tie keeps the
averaged model. The copy is written under a temporary name and renamed. Prints the choice.
"""

from __future__ import annotations

import glob
import os
import sys

from blspeech.checkpoint import copy_checkpoint, load_checkpoint


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    exp = sys.argv[1]
    candidates = sorted(glob.glob(os.path.join(exp, "avg_last_*.pt")))
    candidates.append(os.path.join(exp, "best.pt"))
    scored = []
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            wer = (load_checkpoint(path).get("metrics") or {}).get("dev_wer")
        except ValueError as e:  # missing, corrupt or foreign: one line naming the file
            print(f"{sys.argv[0]}: {e}", file=sys.stderr)
            return 2
        if wer is not None:
            scored.append((wer, len(scored), path))
    if not scored:
        print(f"{sys.argv[0]}: {exp} has no best.pt or avg_last_N.pt with a dev WER; "
              "train first", file=sys.stderr)
        return 2
    wer, _, path = min(scored)
    copy_checkpoint(path, os.path.join(exp, "final.pt"))
    print(f"{exp}/final.pt = {os.path.basename(path)} (dev WER {wer:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
