#!/usr/bin/env python3
"""Score a decode dir with NIST sclite and check blspeech's WER against it.

Usage: local/score_sclite.py DATA_DIR DECODE_DIR

Writes DECODE_DIR/sclite/{ref.trn,hyp.trn,score.sys} (sclite's summary by speaker) and
DECODE_DIR/sclite.json: sclite's error counts and WER, blspeech's (DECODE_DIR/wer.json)
and whether they agree. Needs the Debian package sctk (sclite in PATH or
/usr/lib/sctk/bin/sclite; SCLITE=path overrides); without it, prints a note and exits 0.
Exits 1 when the two WERs disagree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from blspeech.io.fileio import atomic_write
from blspeech.io.kaldi import read_table


def find_sclite() -> str | None:
    for path in (os.environ.get("SCLITE"), shutil.which("sclite"), "/usr/lib/sctk/bin/sclite"):
        if path and os.access(path, os.X_OK):
            return path
    return None


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    data_dir, decode_dir = sys.argv[1:]
    sclite = find_sclite()
    if sclite is None:
        print(f"{sys.argv[0]}: sclite not installed (Debian package sctk); "
              f"{decode_dir}/wer.txt has blspeech's sclite-compatible counts")
        return 0
    for path in (os.path.join(data_dir, "text"), os.path.join(decode_dir, "text"),
                 os.path.join(decode_dir, "wer.json")):
        if not os.path.isfile(path):
            print(f"{sys.argv[0]}: {path} is missing; run the decoding stage first",
                  file=sys.stderr)
            return 2
    def table(path: str) -> dict[str, str]:
        return {k: e.value for k, e in read_table(path, allow_empty_value=True).items()}

    refs = table(os.path.join(data_dir, "text"))
    hyps = table(os.path.join(decode_dir, "text"))
    utt2spk = table(os.path.join(data_dir, "utt2spk"))
    # sclite takes the speaker from the id ("spk_n"); ours contain '_' and '-' themselves.
    ids = {u: f"{utt2spk[u].replace('_', '')}_{k}" for k, u in enumerate(sorted(refs))}
    out = os.path.join(decode_dir, "sclite")
    os.makedirs(out, exist_ok=True)
    for name, texts in (("ref.trn", refs), ("hyp.trn", hyps)):
        with atomic_write(os.path.join(out, name)) as f:
            f.writelines(f"{' '.join(texts.get(u, '').lower().split())} ({ids[u]})\n"
                         for u in sorted(refs))
    subprocess.run([sclite, "-s", "-e", "utf-8", "-r", os.path.join(out, "ref.trn"), "trn",
                    "-h", os.path.join(out, "hyp.trn"), "trn", "-i", "rm", "-o", "sum", "rsum",
                    "-O", out, "-n", "score"], check=True, capture_output=True, text=True)
    raw = open(os.path.join(out, "score.raw"), encoding="utf-8").read()
    m = re.search(r"\|\s*Sum\s*\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)",
                  raw)
    if not m:
        print(f"{sys.argv[0]}: cannot read the Sum line of {out}/score.raw", file=sys.stderr)
        return 2
    words, sub, dele, ins, err = (int(m.group(i)) for i in (2, 4, 5, 6, 7))
    ours = json.load(open(os.path.join(decode_dir, "wer.json"), encoding="utf-8"))
    result = {"sclite": {"ref_words": words, "substitutions": sub, "deletions": dele,
                         "insertions": ins, "errors": err,
                         "wer": round(100.0 * err / words, 4) if words else None},
              "blspeech": {k: ours.get(k) for k in ("ref_words", "substitutions", "deletions",
                                                    "insertions", "errors", "wer")}}
    result["agree"] = all(result["sclite"][k] == result["blspeech"][k]
                          for k in ("ref_words", "substitutions", "deletions", "insertions"))
    with atomic_write(os.path.join(decode_dir, "sclite.json")) as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"{decode_dir}: sclite %WER {result['sclite']['wer']:.2f} "
          f"[{err} / {words}, {ins} ins, {dele} del, {sub} sub]"
          + ("" if result["agree"] else "  DISAGREES with blspeech's counts"))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
