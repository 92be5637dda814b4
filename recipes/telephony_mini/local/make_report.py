#!/usr/bin/env python3
"""Collect the recipe's results into EXP/results.json, EXP/RESULTS.md, EXP/tradeoff.png and
EXP/learning_curves.png.

Reads, per encoder: EXP/efficiency.json (stage 6: params, GFLOPs per second of audio, CPU
RTF and paired RTF ratios), EXP/<run>/decode_<test>/ (greedy), decode_lm_<test>/ (LM
search) and decode_wfst_<test>/ (WFST search) wer.json and text (stage 4) and sclite.json
(stage 5, optional), lm_tuning.json and wfst_tuning.json, EXP/<run>/metrics.jsonl
(training time, dev WER per epoch) and config.yaml; and DATA's corpus_stats.json and
test-set transcripts. ``wer`` in results.json is the recipe's decoding path: of the
searches (LM, WFST), the one with the lowest dev WER averaged over the encoders, chosen on
dev only and the same for every encoder (``decoding`` names it); ``wer_greedy``,
``wer_lm`` and ``wer_wfst`` are each decoding's; ``wer_jiwer`` is jiwer's WER of the
chosen path's decodes.
RESULTS.md judges --candidate against --baseline per test set with NIST's MAPSSWE test
(blspeech.scoring.significance, as SCTK's sc_stats computes it) and, with --seeds N > 1,
gives each
encoder's mean and spread over the seeds. With --hybrid-prefix P (run.sh stage 9) it adds
the hybrid models of stages 8-9 (EXP/<P><encoder>/hybrid_summary.json and decodes): their
WERs, MAPSSWE of the candidate against the baseline on the HLG decodes and of each hybrid
model against its CTC model's chosen path, and the verdict (significance.json:
mapsswe_hybrid, hybrid_vs_ctc). Prints the results. Run with --help for the
options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import textwrap

import torch
import yaml

from blspeech.errors import UserError
from blspeech.inference.compare import write_report
from blspeech.io.checkpoint import load_checkpoint
from blspeech.io.fileio import atomic_write
from blspeech.io.kaldi import read_table
from blspeech.scoring.significance import mapsswe
from blspeech.scoring.wer import jiwer_measures, read_text
from blspeech.text.tokenizers import TextNormalizer, tokenizer_from_dict

#: What MAPSSWE's verdict on (A = candidate, B = baseline) means for the bL claim.
#: Stage 4's decode folder prefixes, their names in the report, and the tuning file of the
#: searches (whose dev WERs choose the recipe's decoding path).
DECODINGS = {"decode": ("greedy", None), "decode_lm": ("LM", "lm_tuning.json"),
             "decode_wfst": ("WFST", "wfst_tuning.json")}
VERDICTS = {"A better": "bL is better", "B better": "bL is worse",
            "no significant difference": "no significant difference"}


# The optional peers (run.sh --encoders) and why the default run leaves them out; the
# measurements are in the recipe README, "Peers".
PEERS = {
    "quartznet_mini": "does not leave the all-blank stage in this budget (93% dev WER after "
                      "5 epochs with its best settings, conf/ctc_quartznet_mini.yaml)",
    "conformer_mini": "learns with its own settings (conf/ctc_conformer_mini.yaml) but is not "
                      "yet in the seeded comparison",
}


def peers_md(encoders: list[str]) -> str:
    """A paragraph on the peers this run left out ('' when it trained them all)."""
    missing = [f"`{name}` {why}" for name, why in PEERS.items() if name not in encoders]
    if not missing:
        return ""
    return "\n" + fill("Not trained in this run (optional: `run.sh --encoders \"... NAME\"`; "
                       "recipe README, \"Peers\"): " + "; ".join(missing) + ".") + "\n"


def fill(text: str, bullet: bool = False) -> str:
    """One Markdown paragraph (or ``- `` bullet) of ``text``, wrapped at 90 columns."""
    if bullet:
        return textwrap.fill(" ".join(text.split()), 90, initial_indent="- ",
                             subsequent_indent="  ")
    return textwrap.fill(" ".join(text.split()), 90)


def load_json(path: str, stage: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run {stage} first") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); re-run {stage}") from None


def read_metrics(exp: str, run: str) -> list[dict]:
    path = os.path.join(exp, run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; run stage 3 (training) first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_wers(exp: str, run: str, test_sets: list[str], decodings: list[str]) -> dict:
    """WERs of one training run per decoding name and test set, with sclite's verdicts
    where stage 5 ran."""
    out: dict = {"sclite": []}
    for prefix in decodings:
        wers = out[DECODINGS[prefix][0]] = {}
        for t in test_sets:
            path = os.path.join(exp, run, f"{prefix}_{t}")
            wers[t] = round(load_json(os.path.join(path, "wer.json"), "stage 4")["wer"], 2)
            if os.path.isfile(os.path.join(path, "sclite.json")):
                out["sclite"].append(load_json(os.path.join(path, "sclite.json"),
                                               "stage 5")["agree"])
    return out


def search_dev_wers(exp: str, run: str, decodings: list[str]) -> dict[str, float]:
    """Dev WER of each search (LM, WFST) with its tuned settings, from its tuning file."""
    return {DECODINGS[p][0]: load_json(os.path.join(exp, run, DECODINGS[p][1]),
                                       "stage 4")["dev_wer"]
            for p in decodings if DECODINGS[p][1]}


def choose_decoding(dev_wers: list[dict[str, float]]) -> str:
    """The search with the lowest dev WER averaged over the encoders: chosen on dev only,
    one path for every encoder so that the comparisons are like for like."""
    names = list(dev_wers[0])
    return min(names, key=lambda n: statistics.mean(d[n] for d in dev_wers))


def jiwer_wers(data_dir: str, exp: str, run: str, test_sets: list[str], prefix: str) -> dict:
    """jiwer's WER of the chosen path's decodes (the same texts as ``wer``), for
    comparison with Hugging Face-style numbers; it can differ from sclite's (blspeech
    score --help)."""
    out = {}
    for t in test_sets:
        refs = read_text(os.path.join(data_dir, t, "text"))
        hyps = read_text(os.path.join(exp, run, f"{prefix}_{t}", "text"))
        out[t] = round(jiwer_measures(refs, hyps)["wer"], 2)
    return out


def encoder_row(exp: str, enc: str, efficiency: dict, test_sets: list[str],
                gpu: dict | None, baseline: str, decodings: list[str], chosen: str) -> dict:
    if enc not in efficiency:
        raise UserError(f"{exp}/efficiency.json has no {enc}; re-run stage 6 with the same "
                        "--encoders")
    eff = efficiency[enc]
    metrics = read_metrics(exp, enc)
    with open(os.path.join(exp, enc, "config.yaml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    wers = run_wers(exp, enc, test_sets, decodings)
    tuning = load_json(os.path.join(exp, enc, "lm_tuning.json"), "stage 4")
    row = {"encoder": enc, "params": eff["params"], "gflops_per_sec": eff["gflops_per_sec"],
           "gmacs_per_sec": eff["gmacs_per_sec"], "rtf_cpu": eff["rtf"],
           "decoding": chosen, "wer": wers[chosen],
           **{f"wer_{name.lower()}": wers[name] for name, _ in
              (DECODINGS[p] for p in decodings)},
           "lm": {k: tuning[k] for k in ("lm_weight", "word_score", "dev_wer")},
           "train_seconds": round(sum(m["seconds"] for m in metrics), 1),
           "epoch_seconds": [m["seconds"] for m in metrics],
           "checkpoint": os.path.join(exp, enc, "final.pt"),
           "epochs": metrics[-1]["epoch"] if metrics else 0,
           "dev_wer": round(min(m["dev_wer"] for m in metrics), 2) if metrics else None,
           "dev_wer_curve": [m["dev_wer"] for m in metrics],
           "rtf_cpu_runs": eff["rtf_runs"], "rtf_threads": eff["threads"],
           "model_config": config["model"]}
    # Paired per-round ratios when the baseline was the reference of stage 6's rounds.
    if eff.get("rtf_ratio_to") == baseline:
        row.update(rtf_ratio_cpu=eff["rtf_ratio"], rtf_ratio_iqr=eff["rtf_ratio_iqr"],
                   rtf_stable=eff["rtf_stable"])
    if gpu and enc in gpu:
        row["rtf_gpu"] = gpu[enc]["rtf"]
    if "WFST" in wers:
        w = load_json(os.path.join(exp, enc, "wfst_tuning.json"), "stage 4")
        row["wfst"] = {k: w[k] for k in ("acoustic_scale", "word_penalty", "dev_wer")}
    if wers["sclite"]:
        row["sclite_agrees"] = all(wers["sclite"])
    return row


def significance(data_dir: str, exp: str, baseline: str, candidate: str,
                 test_sets: list[str], decodings: list[str]) -> list[dict]:
    """MAPSSWE of the candidate (A) against the baseline (B) per test set and decoding."""
    return mapsswe_tests(data_dir, exp, candidate, baseline, test_sets,
                         [(DECODINGS[p][0], p, p) for p in decodings])


def mapsswe_tests(data_dir: str, exp: str, run_a: str, run_b: str, test_sets: list[str],
                  folders: list[tuple[str, str, str]]) -> list[dict]:
    """MAPSSWE of EXP/RUN_A against EXP/RUN_B per test set and (decoding name, A's decode
    folder prefix, B's prefix), on the texts normalized as B's wer.json was scored."""
    results = []
    for t in test_sets:
        for decoding, pa, pb in folders:
            details = load_json(os.path.join(exp, run_b, f"{pb}_{t}", "wer.json"),
                                "the decoding stage")
            norm = TextNormalizer(**details["normalizer"])
            refs = {k: norm(e.value) for k, e in read_table(
                os.path.join(data_dir, t, "text"), allow_empty_value=True).items()}
            hyps = [{k: norm(e.value) for k, e in read_table(
                os.path.join(exp, run, f"{prefix}_{t}", "text"),
                allow_empty_value=True).items()} for run, prefix in ((run_a, pa), (run_b, pb))]
            r = mapsswe(refs, *hyps)
            results.append({"test_set": t, "decoding": decoding, **r.to_dict(),
                            "verdict": VERDICTS[r.verdict()]})
    return results


def hybrid_rows(exp: str, prefix: str, encoders: list[str], test_sets: list[str]
                ) -> list[dict]:
    """The hybrid models of stages 8-9 (EXP/<prefix><encoder>) that have been decoded:
    HLG (WFST) WERs, flashlight's lexicon search with and without the LM, training time."""
    rows = []
    for enc in encoders:
        run = prefix + enc
        path = os.path.join(exp, run, "hybrid_summary.json")
        if not os.path.isfile(path):
            continue
        summary = load_json(path, "stage 9")
        metrics = read_metrics(exp, run)
        with open(os.path.join(exp, run, "config.yaml"), encoding="utf-8") as f:
            config = yaml.safe_load(f)
        lexicon = summary.get("lexicon") or {}
        rows.append({
            "encoder": enc, "run": run,
            "wer_hlg": {t: round(summary["sets"][t]["wer"], 2) for t in test_sets},
            **{f"wer_{n}": {t: round(lexicon[n]["wer"][t], 2) for t in test_sets}
               for n in ("nolm", "lm") if n in lexicon},
            "dev_wer_hlg": summary["dev_wer"],
            "frame_acc": {k: v["frame_acc"] for k, v in summary["sets"].items()},
            "epochs": len(metrics),
            "train_seconds": round(sum(m["seconds"] for m in metrics), 1),
            "init_encoder": config["training"].get("init_encoder")})
    return rows


def hybrid_md(hrows: list[dict], rows: list[dict], sig: list[dict], vs_ctc: list[dict],
              baseline: str, candidate: str, test_sets: list[str]) -> str:
    """The hybrid head's section: WERs beside the CTC head's, MAPSSWE and the verdict."""
    ctc = {r["encoder"]: r for r in rows}
    chosen = rows[0]["decoding"]
    init = any(h["init_encoder"] for h in hrows)
    lines = ["## The HMM-hybrid head (stages 8-9)", "", fill(f"""The same encoders with a
             hybrid head: frame cross-entropy on the pdfs of a monophone GMM-HMM's
             alignments (`blspeech align-gmm`),
             {"starting from each encoder's CTC model (`training.init_encoder`), "
              if init else ""}decoded by Kaldi's decoder on an HLG graph of the GMM's HMMs,
             the lexicon and the same 3-gram LM ("HLG"; prior and acoustic scale tuned on
             dev); "no LM" / "LM": flashlight's lexicon search over the phones without / with
             the LM. Details: `RESULTS_hybrid_gmm.md`."""), "",
             "| encoder | " + " | ".join(f"{t} no LM / LM / **HLG** %" for t in test_sets)
             + f" | dev HLG % | epochs, train min | CTC {chosen} " + " / ".join(test_sets)
             + " % |", "|---|" + "---|" * len(test_sets) + "---:|---|---|"]
    for h in hrows:
        cells = [h["encoder"]] + [" / ".join(
            [*(f"{h[f'wer_{n}'][t]:.2f}" if f"wer_{n}" in h else "n/a"
               for n in ("nolm", "lm")), f"**{h['wer_hlg'][t]:.2f}**"]) for t in test_sets]
        cells += [f"{h['dev_wer_hlg']:.2f}", f"{h['epochs']}, {h['train_seconds'] / 60:.1f}",
                  " / ".join(f"{ctc[h['encoder']]['wer'][t]:.2f}" for t in test_sets)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| comparison | test set | WER A | WER B | Z | p | verdict |",
              "|---|---|---:|---:|---:|---:|---|"]
    compared = [(f"{candidate} (A) vs {baseline} (B), HLG", s, s["verdict"]) for s in sig]
    compared += [(f"{s['encoder']}: hybrid HLG (A) vs CTC {chosen} (B)", s,
                  s["verdict"].replace("bL", "the hybrid")) for s in vs_ctc]
    for label, s, verdict in compared:
        lines.append(f"| {label} | {s['test_set']} | {s['wer_a']:.2f} | {s['wer_b']:.2f} | "
                     f"{s['z']:.2f} | {s['p_value']:.3g} | {verdict} |")
    if sig:
        by = {r["encoder"]: r for r in rows}
        b, c = by.get(baseline), by.get(candidate)
        ratios = ""
        if b and c:
            rtf = c.get("rtf_ratio_cpu", c["rtf_cpu"] / b["rtf_cpu"])
            flops = c["gflops_per_sec"] / b["gflops_per_sec"]
            ratios = (f"; the encoders' FLOPs ratio {flops:.3f}x "
                      f"and CPU RTF ratio {rtf:.3f}x (stage 6, CTC heads: the hybrid head is "
                      "a linear layer of about the same size)")
        verdicts = "; ".join(f"{s['test_set']}: **{s['verdict']}**" for s in sig)
        lines += ["", fill(f"""Verdict, hybrid heads (HLG search, the recipe's best path;
                  MAPSSWE, p < 0.05): {verdicts}{ratios}.""")]
    return "\n".join(lines) + "\n"


def seed_rows(exp: str, encoders: list[str], seeds: int, test_sets: list[str],
              decodings: list[str]) -> list[dict]:
    """Per encoder, test set and decoding: the WER of every seed, mean and spread."""
    rows = []
    for enc in encoders:
        runs = [enc] + [f"{enc}_seed{k}" for k in range(1, seeds)]
        per = [run_wers(exp, r, test_sets, decodings) for r in runs]
        for t in test_sets:
            for name in (DECODINGS[p][0] for p in decodings):
                values = [p[name][t] for p in per]
                rows.append({"encoder": enc, "test_set": t, "decoding": name,
                             "wers": values, "mean": round(statistics.mean(values), 2),
                             "stdev": round(statistics.stdev(values), 2) if seeds > 1 else 0.0,
                             "min": min(values), "max": max(values)})
    return rows


def plot_curves(exp: str, runs: dict[str, list[str]], path: str) -> None:
    """Dev WER (greedy) after each epoch against cumulative training wall minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (enc, names) in enumerate(runs.items()):
        for k, name in enumerate(names):
            metrics = read_metrics(exp, name)
            minutes = [sum(m["seconds"] for m in metrics[: j + 1]) / 60
                       for j in range(len(metrics))]
            ax.plot(minutes, [m["dev_wer"] for m in metrics], marker="o", markersize=3,
                    color=f"C{i}", alpha=1.0 if k == 0 else 0.4,
                    label=enc if k == 0 else None)
    ax.set_xlabel("training wall minutes (dev evaluation included)")
    ax.set_ylabel("dev WER, greedy (%)")
    ax.set_title("learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def significance_md(sig: list[dict], rows: list[dict], baseline: str, candidate: str) -> str:
    by = {r["encoder"]: r for r in rows}
    b, c = by[baseline], by[candidate]
    flops = c["gflops_per_sec"] / b["gflops_per_sec"]
    rtf = c.get("rtf_ratio_cpu", c["rtf_cpu"] / b["rtf_cpu"])
    lines = ["## Is the difference real? (MAPSSWE)", "",
             fill(f"""NIST's matched-pairs sentence-segment word error test, as SCTK's sc_stats
             computes it (`blspeech compare-wer`), of {candidate} (A) against {baseline} (B)
             on the same utterances; significant when |Z| > 1.96 (p < 0.05, two-tailed)."""),
             "", "| test set | decoding | WER bL | WER base | segments | Z | p | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for s in sig:
        lines.append(f"| {s['test_set']} | {s['decoding']} | {s['wer_a']:.2f} | "
                     f"{s['wer_b']:.2f} | {s['segments']} | {s['z']:.2f} | "
                     f"{s['p_value']:.3f} | {s['verdict']} |")
    chosen = c["decoding"]
    verdicts = "; ".join(f"{s['test_set']}: **{s['verdict']}**" for s in sig
                         if s["decoding"] == chosen)
    lines += ["", fill(f"""Verdict ({chosen} decoding, the recipe's path; p < 0.05):
              {verdicts}; at {flops:.3f}x the baseline's FLOPs and {rtf:.3f}x its CPU
              decoding RTF.""")]
    return "\n".join(lines) + "\n"


def seeds_md(rows: list[dict], seeds: int) -> str:
    lines = [f"## Seeds ({seeds} per encoder)", "",
             "| encoder | test set | decoding | WER per seed | mean | stdev | range |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['test_set']} | {r['decoding']} | "
                     f"{', '.join(f'{w:.2f}' for w in r['wers'])} | {r['mean']:.2f} | "
                     f"{r['stdev']:.2f} | {r['max'] - r['min']:.2f} |")
    return "\n".join(lines) + "\n"


def cpu_flags() -> str:
    """The vector extensions timings depend on, from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return "CPU flags unknown"
    wanted = sorted(f for f in set(flags) if f == "avx2" or f.startswith("avx512"))
    return "flags " + (" ".join(wanted) if wanted else "without AVX2")


def stability(rows: list[dict]) -> str:
    if any(r.get("rtf_stable") is False for r in rows):
        return ("; **the machine was too busy for a stable figure** (the rounds varied too "
                "much: see rtf_cpu_runs in results.json)")
    return ""


def decodings_md(rows: list[dict], test_sets: list[str], names: list[str]) -> str:
    """Every decoding's WERs side by side, with the dev WERs and tuned settings."""
    slash = " / ".join(names)
    wfst = "WFST" in names
    head = (["encoder"] + [f"{t} {slash} %" for t in test_sets]
            + [f"dev {slash} %", "LM weight, word score"]
            + (["acoustic scale, word penalty"] if wfst else []))
    lines = [f"## Decodings: {', '.join(names)}", "", fill(f"""Greedy: best path, no LM. LM:
             the lexicon + word 3-gram beam search (flashlight). WFST: Kaldi's decoder on a
             TLG graph of the same LM (kaldifst, kaldilm, kaldi-decoder). Dev greedy is the
             last epoch's; the searches' dev WERs are final.pt's with their tuned settings.
             The recipe's path (`wer`): {rows[0]['decoding']}, the lowest mean dev
             WER."""), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        dev = {"greedy": r["dev_wer_curve"][-1], "LM": r["lm"]["dev_wer"],
               "WFST": r.get("wfst", {}).get("dev_wer")}
        cells = [r["encoder"]] + [" / ".join(f"{r[f'wer_{n.lower()}'][t]:.2f}" for n in names)
                                  for t in test_sets]
        cells += [" / ".join(f"{dev[n]:.2f}" for n in names),
                  f"{r['lm']['lm_weight']}, {r['lm']['word_score']}"]
        if wfst:
            cells.append(f"{r['wfst']['acoustic_scale']}, {r['wfst']['word_penalty']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def training_set(data_dir: str, train_set: str | None) -> str:
    """' on DIR (N utterances: train plus M speed-perturbed copies)' for the intro."""
    if not train_set or os.path.normpath(train_set) == os.path.join(
            os.path.normpath(data_dir), "train"):
        return ""

    def count(d: str) -> int:
        with open(os.path.join(d, "utt2spk"), encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())

    total, train = count(train_set), count(os.path.join(data_dir, "train"))
    return (f" on `{train_set}` ({total} utterances: train plus {total - train} "
            "speed-perturbed copies of the real speaker's recordings)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--encoders", required=True, help="space-separated encoder names")
    p.add_argument("--baseline", required=True)
    p.add_argument("--candidate", required=True)
    p.add_argument("--test-sets", default="test_real test_synth")
    p.add_argument("--device", default="cpu", help="the device the models were trained on")
    p.add_argument("--seeds", type=int, default=1, help="training runs per encoder (stage 3)")
    p.add_argument("--train-set", default=None,
                   help="the data dir the models trained on (default: DATA/train)")
    p.add_argument("--train-jobs", type=int, default=1,
                   help="trainings that ran at the same time in stage 3")
    p.add_argument("--decodings", default="decode decode_lm",
                   help="stage 4's decode folder prefixes, space-separated, of: "
                   + " ".join(DECODINGS) + " (default: %(default)s)")
    p.add_argument("--hybrid-prefix", default="",
                   help="with the hybrid models of stages 8-9 in EXP/<prefix><encoder> "
                   "(e.g. hybrid_gmm_): their section, MAPSSWE and verdict (default: none)")
    args = p.parse_args()
    exp, encoders, test_sets = args.exp_dir, args.encoders.split(), args.test_sets.split()
    decodings = args.decodings.split()
    unknown = sorted(set(decodings) - set(DECODINGS))
    if unknown or not any(DECODINGS[d][1] for d in decodings):
        p.error(f"--decodings needs a search ({' '.join(DECODINGS)}), got {args.decodings!r}")
    names = [DECODINGS[d][0] for d in decodings]
    try:
        efficiency = load_json(os.path.join(exp, "efficiency.json"), "stage 6")
        gpu_path = os.path.join(exp, f"efficiency_{args.device.replace(':', '_')}.json")
        gpu = load_json(gpu_path, "stage 6") if args.device != "cpu" and os.path.isfile(
            gpu_path) else None
        chosen = choose_decoding([search_dev_wers(exp, e, decodings) for e in encoders])
        prefix = next(d for d in decodings if DECODINGS[d][0] == chosen)
        rows = [{**encoder_row(exp, enc, efficiency, test_sets, gpu, args.baseline,
                               decodings, chosen),
                 "wer_jiwer": jiwer_wers(args.data_dir, exp, enc, test_sets, prefix)}
                for enc in encoders]
        stats = load_json(os.path.join(args.data_dir, "corpus_stats.json"), "stage 0")
        compared = args.baseline in encoders and args.candidate in encoders
        sig = (significance(args.data_dir, exp, args.baseline, args.candidate, test_sets,
                            decodings) if compared else [])
        seeds = (seed_rows(exp, encoders, args.seeds, test_sets, decodings)
                 if args.seeds > 1 else [])
        hrows = (hybrid_rows(exp, args.hybrid_prefix, encoders, test_sets)
                 if args.hybrid_prefix else [])
        hybrid = {h["encoder"]: h for h in hrows}
        hsig = (mapsswe_tests(args.data_dir, exp, hybrid[args.candidate]["run"],
                              hybrid[args.baseline]["run"], test_sets,
                              [("HLG", "decode", "decode")])
                if args.baseline in hybrid and args.candidate in hybrid else [])
        vs_ctc = [{**s, "encoder": h["encoder"]} for h in hrows for s in mapsswe_tests(
            args.data_dir, exp, h["run"], h["encoder"], test_sets,
            [(f"hybrid HLG vs CTC {chosen}", "decode", prefix)])]
        for r in rows:
            if r["encoder"] in hybrid:
                r["wer_hybrid_hlg"] = hybrid[r["encoder"]]["wer_hlg"]
        plot_curves(exp, {e: [e] + [f"{e}_seed{k}" for k in range(1, args.seeds)]
                          for e in encoders}, os.path.join(exp, "learning_curves.png"))
    except (UserError, OSError) as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    first = rows[0]
    config = yaml.safe_load(open(os.path.join(exp, first["encoder"], "config.yaml"),
                                 encoding="utf-8"))
    split_lines = ["| split | utterances | speakers | hours |", "|---|---:|---:|---:|"]
    order = ["train", "dev", *test_sets]
    for name, s in sorted(stats["splits"].items(),
                          key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        split_lines.append(f"| {name} | {s['utterances']} | {s['speakers']} | {s['hours']:.2f} |")
    eff_any = efficiency[first["encoder"]]
    tok = tokenizer_from_dict(load_checkpoint(first["checkpoint"])["tokenizer"])
    tokens = f"{tok.vocab_size} {'BPE pieces' if tok.kind == 'bpe' else 'characters'}"
    specaug = "SpecAugment" if config.get("specaug") else "no SpecAugment"
    cpu = platform.processor() or platform.machine()
    intro = fill(f"""Every encoder was trained{training_set(args.data_dir, args.train_set)}
        with the same CTC recipe ({first['epochs']} epochs,
        AdamW lr {config['optim']['lr']}, {config['schedule']['name']} schedule, {specaug},
        batches of {config['data']['max_frames']} frames, {tokens}) on the same corpus, and
        decoded greedily and with a word 3-gram LM estimated from the training transcripts
        only ({' and '.join(n for n in names if n != 'greedy')} search, settings tuned on
        dev). Produced by
        `recipes/telephony_mini/run.sh` (stage 7) from the files under `{exp}/`; machine:
        {os.cpu_count()} CPU cores ({cpu}; {cpu_flags()}), torch {torch.__version__},
        training device {args.device}.""")
    bullets = "\n".join(fill(b, bullet=True) for b in (
        """GFLOPs/s audio: floating-point operations per second of audio for the whole CTC
        model, counted by torch's FLOP counter on a 10 s input (2 FLOPs per multiply-add;
        `gmacs_per_sec` in results.json is the multiply-add count, the bL-Net paper's
        "FLOPs").""",
        f"""CPU RTF: seconds of greedy decoding (model forward with BatchNorm folded + best
        path, batched as `blspeech decode` does, features read beforehand) per second of
        audio on {eff_any['utterances']} utterances of test_synth
        ({eff_any['audio_seconds']:.0f} s), {eff_any['threads']} threads, median of
        {len(eff_any['rtf_runs'])} rounds in which the models took turns (`blspeech
        compare-models`); "x baseline" is the median of the per-round ratios to the
        baseline's time in the same round{stability(rows)}.""",
        f"""WER: the {chosen} search (the recipe's decoding path: of the searches, the
        lowest dev WER averaged over the encoders), scored with sclite's alignment rules
        (`blspeech score`); every decoding's WERs are in the second table and in
        results.json (`wer_greedy`, `wer_lm`, `wer_wfst`). "Pareto": the test sets on
        which no other encoder has both fewer GFLOPs and a lower WER.""",
        "train min: wall-clock training time (all epochs, dev evaluation included)"
        + (f"; {args.train_jobs} trainings ran at a time (`--train-jobs`), so the encoders' "
           "times were measured side by side, sharing the machine" if args.train_jobs > 1
           else "") + "."))
    preamble = (f"# telephony_mini results\n\n{intro}\n\nCorpus (`{args.data_dir}/`):\n\n"
                + "\n".join(split_lines) + f"\n\n## Results\n\n{bullets}\n\n")
    epilogue = "\n" + decodings_md(rows, test_sets, names)
    if sig:
        epilogue += "\n" + significance_md(sig, rows, args.baseline, args.candidate)
    if hrows:
        epilogue += "\n" + hybrid_md(hrows, rows, hsig, vs_ctc, args.baseline,
                                     args.candidate, test_sets)
    if seeds:
        epilogue += "\n" + seeds_md(seeds, args.seeds)
    epilogue += ("\n![dev WER against training wall minutes](learning_curves.png)\n"
                 "![WER against GFLOPs per second of audio](tradeoff.png)\n")
    sclite = [r.get("sclite_agrees") for r in rows if "sclite_agrees" in r]
    if sclite:
        epilogue += ("\nNIST sclite " + ("gives the same error counts for every decode."
                                         if all(sclite) else
                                         "DISAGREES on some decodes: see decode_*/sclite.json.")
                     + "\n")
    epilogue += peers_md(encoders)
    if args.seeds == 1:
        epilogue += ("\nOne training run per encoder (one seed): `--seeds N` trains N and "
                     "reports their spread.\n")
    if any("rtf_gpu" in r for r in rows):
        epilogue += "\nGPU RTF (same measurement on " + args.device + "): " + ", ".join(
            f"{r['encoder']} {r['rtf_gpu']:.5f}" for r in rows if "rtf_gpu" in r) + "\n"
    try:
        paths = write_report(rows, exp, test_sets, baseline=args.baseline,
                             candidate=args.candidate, preamble=preamble, epilogue=epilogue)
        with atomic_write(os.path.join(exp, "significance.json")) as f:
            json.dump({"mapsswe": sig, "seeds": seeds, "hybrid": hrows,
                       "mapsswe_hybrid": hsig, "hybrid_vs_ctc": vs_ctc}, f, indent=2)
            f.write("\n")
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    text = open(paths["md"], encoding="utf-8").read()
    print(text[text.index("## Results"):])
    print(f"written: {paths['md']}, {paths['json']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
