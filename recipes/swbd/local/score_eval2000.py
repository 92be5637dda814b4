#!/usr/bin/env python3
"""Score an eval2000 decode as Kaldi's swbd recipes do: all, Switchboard, CallHome.

Usage: local/score_eval2000.py DATA_DIR DECODE_DIR

1. DECODE_DIR/ctm (per utterance, as 'blspeech decode' writes it) becomes a file-level
   CTM (DECODE_DIR/score_hub5/hyp.ctm) with DATA_DIR's segments and
   reco2file_and_channel (Kaldi's utils/convert_ctm.pl).
2. blspeech.scoring.hub5.score_hub5 scores it against DATA_DIR/stm with DATA_DIR/glm: noise tags,
   <unk>, hesitations and fragments dropped from the hypothesis (Kaldi's filter), the GLM
   applied to both sides (csrfilt.sh -dh), optional reference words, sclite's time-mediated
   alignment; subsets swbd (sw_*) and callhm (en_*). Writes DECODE_DIR/score_hub5/
   results.json (counts per subset) and summary.txt (Kaldi-style %WER lines).
3. Where NIST SCTK is installed (/usr/lib/sctk/bin or SCTK_BIN), the same filtered CTM is
   run through the real csrfilt.sh and sclite (-F -D, per subset) and the counts are
   compared (results.json "sclite" and "agree"; exit 1 if they differ).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write
from blspeech.scoring.hub5 import (
    DEFAULT_SUBSETS,
    ctm_from_utterance_ctm,
    filter_hyp_words,
    read_ctm,
    score_hub5,
)

KEYS = ("ref_words", "substitutions", "deletions", "insertions")


def sctk_bin() -> str | None:
    for d in (os.environ.get("SCTK_BIN"), "/usr/lib/sctk/bin",
              os.path.dirname(shutil.which("sclite") or "")):
        if d and all(os.access(os.path.join(d, t), os.X_OK) for t in ("sclite", "csrfilt.sh")):
            return d
    return None


def sclite_counts(bin_dir: str, stm: str, ctm: str, glm: str, work: str
                  ) -> dict[str, dict[str, int]]:
    """Counts of the real tools per subset: csrfilt.sh -dh on both sides, sclite -F -D."""
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def csrfilt(kind: str, side: str, src: str, dst: str) -> None:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            subprocess.run([os.path.join(bin_dir, "csrfilt.sh"), "-i", kind, "-t", side,
                            "-dh", glm], stdin=fin, stdout=fout, check=True, env=env,
                           stderr=subprocess.DEVNULL)

    csrfilt("stm", "ref", stm, os.path.join(work, "ref.stm"))
    csrfilt("ctm", "hyp", ctm, os.path.join(work, "hyp.ctm"))
    subsets = {"all": None, **DEFAULT_SUBSETS}
    out = {}
    for name, regex in subsets.items():
        files = {}
        for kind in ("ref.stm", "hyp.ctm"):
            lines = open(os.path.join(work, kind), encoding="utf-8").read().splitlines()
            if regex is not None:  # Kaldi greps the subset's file ids
                lines = [x for x in lines if x.startswith(";;") or re.search(regex, x)]
            files[kind] = os.path.join(work, f"{name}.{kind}")
            with open(files[kind], "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        if regex is not None and not any(not x.startswith(";;") for x in
                                         open(files["ref.stm"]).read().splitlines()):
            continue
        subprocess.run([os.path.join(bin_dir, "sclite"), "-r", files["ref.stm"], "stm",
                        "-h", files["hyp.ctm"], "ctm", "-F", "-D", "-o", "rsum", "-O", work,
                        "-n", name], check=True, capture_output=True, env=env)
        raw = open(os.path.join(work, f"{name}.raw"), encoding="utf-8").read()
        m = re.search(r"\|\s*Sum\s*\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)",
                      raw)
        if not m:
            raise UserError(f"cannot read the Sum line of sclite's {name}.raw")
        words, _, sub, dele, ins = (int(m.group(i)) for i in (2, 3, 4, 5, 6))
        out[name] = dict(zip(KEYS, (words, sub, dele, ins), strict=True))
    return out


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    data_dir, decode_dir = sys.argv[1:]
    out_dir = os.path.join(decode_dir, "score_hub5")
    try:
        for name in ("stm", "glm", "segments", "reco2file_and_channel"):
            if not os.path.isfile(os.path.join(data_dir, name)):
                raise UserError(f"{os.path.join(data_dir, name)} is missing; run stage 0")
        utt_ctm = os.path.join(decode_dir, "ctm")
        if not os.path.isfile(utt_ctm):
            raise UserError(f"{utt_ctm} is missing; run the decoding stage first")
        os.makedirs(out_dir, exist_ok=True)
        notes: list[str] = []
        with open(utt_ctm, encoding="utf-8") as f:
            lines = ctm_from_utterance_ctm(f, os.path.join(data_dir, "segments"),
                                           os.path.join(data_dir, "reco2file_and_channel"),
                                           warnings=notes)
        hyp = os.path.join(out_dir, "hyp.ctm")
        with atomic_write(hyp) as f:
            f.writelines(line + "\n" for line in lines)
        stm, glm = os.path.join(data_dir, "stm"), os.path.join(data_dir, "glm")
        results = score_hub5(stm, hyp, glm)
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    report = {name: {**{k: getattr(r, k) for k in KEYS}, "errors": r.errors,
                     "wer": None if r.wer is None else round(r.wer, 2),
                     "sentences": r.sentences}
              for name, r in results.items()}
    summary = {"subsets": report, "notes": results["all"].warnings + notes}
    bin_dir = sctk_bin()
    if bin_dir is not None:
        with tempfile.TemporaryDirectory() as work:
            filtered = os.path.join(work, "filt.ctm")
            with open(filtered, "w", encoding="utf-8") as f:
                # A decoder's CTM has plain words (no alternations) and no confidences.
                f.writelines(f"{w.file} {w.channel} {w.start:.2f} {w.duration:.2f} {w.word}\n"
                             for w in filter_hyp_words(read_ctm(hyp)))
            summary["sclite"] = sclite_counts(bin_dir, stm, filtered, glm, work)
        summary["agree"] = all(summary["sclite"].get(n) == {k: report[n][k] for k in KEYS}
                               for n in report)
    with atomic_write(os.path.join(out_dir, "results.json")) as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    text = [f"%WER {v['wer'] if v['wer'] is not None else 'UNDEF'} [ {v['errors']} / "
            f"{v['ref_words']}, {v['insertions']} ins, {v['deletions']} del, "
            f"{v['substitutions']} sub ] {name}" for name, v in report.items()]
    with atomic_write(os.path.join(out_dir, "summary.txt")) as f:
        f.write("\n".join(text) + "\n")
    for line in text:
        print(f"{decode_dir}: {line}")
    if summary.get("agree") is False:
        print(f"{decode_dir}: NIST sclite's counts differ: {summary['sclite']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
