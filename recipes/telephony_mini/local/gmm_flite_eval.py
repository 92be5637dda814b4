#!/usr/bin/env python3
"""Agreement of ``blspeech align-gmm`` alignments with flite's own phone timings.

Usage: local/gmm_flite_eval.py DATA GMM_EXP SPLIT ALI_SCP

For the flite-voiced utterances of SPLIT, the corpus plan is rebuilt from
DATA/corpus_stats.json (the same jobs: voice, speaking rate, text, channel seed), flite is
run again with the job's voice and ``duration_stretch`` and ``-psdur`` (each phone's end
time), and the leading silence the telephone channel added (drawn from the job's seed, as
``telephone_channel`` draws it) is added to the times. Prints one JSON line: the share of
frames whose aligned phone is flite's phone at the frame's centre, and, for utterances whose
non-silence phone sequence equals flite's, the share of phone ends within 20 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from blspeech.corpora.synth import engine_text
from blspeech.corpora.telephony import CorpusConfig, plan_corpus
from blspeech.io.kaldi import read_int_vectors

#: flite phone names that differ from ARPAbet (the rest are ARPAbet in lower case).
FLITE_TO_ARPABET = {"pau": "SIL", "ax": "AH"}
TOLERANCE_S = 0.02


def _transition_model(exp: str):
    import kaldi_hmm_gmm as khg

    with open(os.path.join(exp, "lang", "phones.txt"), encoding="utf-8") as f:
        phones = [ln.split()[0] for ln in f]
    topo = khg.HmmTopology()
    with open(os.path.join(exp, "topo"), encoding="utf-8") as f:
        topo.read(f.read())
    ctx = khg.monophone_context_dependency(list(range(1, len(phones))),
                                           topo.get_phone_to_num_pdf_classes())
    return phones, khg.TransitionModel(ctx, topo)


def _flite_segments(job) -> list[tuple[str, float]]:
    out = subprocess.run(["flite", "-voice", job.voice.name, "--setf",
                          f"duration_stretch={1.0 / job.rate:.3f}", "-psdur", "-t",
                          engine_text(job.spoken, "flite"), "-o", "/dev/null"],
                         capture_output=True, text=True, check=True).stdout.split()
    segs = []
    for item in out:
        name, _, end = item.partition(":")
        if end:
            segs.append((FLITE_TO_ARPABET.get(name, name.upper()), float(end)))
    return segs


def main() -> int:
    data_dir, exp, split, ali_scp = sys.argv[1:5]
    with open(os.path.join(data_dir, "corpus_stats.json"), encoding="utf-8") as f:
        c = json.load(f)["config"]
    cfg = CorpusConfig(text_dir=c["text_dir"], held_out_speakers=tuple(c["held_out_speakers"]),
                       seed=c["seed"], sound_dir=c["sound_dir"], transcripts=c["transcripts"])
    plan = plan_corpus(cfg, data_dir, log=lambda _: None)
    jobs = {u.utt: u.job for u in plan.splits[split]
            if u.job is not None and u.job.voice.engine == "flite"}
    phones, tm = _transition_model(exp)
    alis = dict(read_int_vectors(f"scp:{ali_scp}", keys=list(jobs)))
    frames_ok = frames = bounds_ok = bounds = same = 0
    for utt in sorted(alis):
        job, tids = jobs[utt], alis[utt]
        segs = _flite_segments(job)
        pad = int(np.random.default_rng(job.seed).uniform(*cfg.channel.pad_s, size=2)[0]
                  * cfg.channel.sample_rate) / cfg.channel.sample_rate
        labels, ends = [s for s, _ in segs], np.array([e for _, e in segs]) + pad
        hyp = [phones[tm.transition_id_to_phone(int(t))] for t in tids]
        centres = np.arange(len(tids)) * 0.01 + 0.0125          # 25 ms windows every 10 ms
        idx = np.minimum(np.searchsorted(ends, centres), len(labels) - 1)
        ref = [labels[i] if centres[k] >= pad else "SIL" for k, i in enumerate(idx)]
        frames_ok += sum(a == b for a, b in zip(hyp, ref, strict=True))
        frames += len(hyp)
        # A phone ends with the transition into its final state; its time is the edge
        # between that frame's and the next frame's centres.
        hyp_ends = [(t + 1) * 0.01 + 0.0075 for t, tid in enumerate(tids)
                    if tm.is_final(int(tid)) and hyp[t] != "SIL"]
        hyp_seq = [hyp[t] for t, tid in enumerate(tids)
                   if tm.is_final(int(tid)) and hyp[t] != "SIL"]
        ref_seq = [s for s in labels if s != "SIL"]
        if hyp_seq == ref_seq:
            same += 1
            ref_ends = ends[[i for i, s in enumerate(labels) if s != "SIL"]]
            d = np.abs(np.array(hyp_ends) - ref_ends)
            bounds_ok += int((d <= TOLERANCE_S).sum())
            bounds += len(d)
    print(json.dumps({"split": split, "flite_utts": len(alis),
                      "frame_phone_agreement": round(frames_ok / max(frames, 1), 4),
                      "same_phone_sequence": same, "phone_ends": bounds,
                      "ends_within_20ms": round(bounds_ok / max(bounds, 1), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
