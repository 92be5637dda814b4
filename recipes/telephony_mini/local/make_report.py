#!/usr/bin/env python3
"""Collect the recipe's results into EXP/results.json, EXP/RESULTS.md and EXP/tradeoff.png.

Reads, per encoder: EXP/efficiency.json (stage 6: params, GFLOPs per second of audio, CPU
RTF), EXP/<encoder>/decode_<test>/wer.json (stage 4) and sclite.json (stage 5, optional),
EXP/<encoder>/metrics.jsonl (training time, dev WER) and config.yaml; and DATA's
corpus_stats.json. Prints the results table. Run with --help for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap

import torch
import yaml

from blspeech.checkpoint import load_checkpoint
from blspeech.compare import write_report
from blspeech.errors import UserError
from blspeech.text import tokenizer_from_dict


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


def encoder_row(exp: str, enc: str, efficiency: dict, test_sets: list[str],
                gpu: dict | None) -> dict:
    if enc not in efficiency:
        raise UserError(f"{exp}/efficiency.json has no {enc}; re-run stage 6 with the same "
                        "--encoders")
    eff = efficiency[enc]
    path = os.path.join(exp, enc, "metrics.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; run stage 3 (training) first")
    with open(path, encoding="utf-8") as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(exp, enc, "config.yaml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    wer, sclite = {}, {}
    for t in test_sets:
        d = os.path.join(exp, enc, f"decode_{t}")
        wer[t] = round(load_json(os.path.join(d, "wer.json"), "stage 4")["wer"], 2)
        if os.path.isfile(os.path.join(d, "sclite.json")):
            sclite[t] = load_json(os.path.join(d, "sclite.json"), "stage 5")
    row = {"encoder": enc, "params": eff["params"], "gflops_per_sec": eff["gflops_per_sec"],
           "gmacs_per_sec": eff["gmacs_per_sec"], "rtf_cpu": eff["rtf"], "wer": wer,
           "train_seconds": round(sum(m["seconds"] for m in metrics), 1),
           "checkpoint": os.path.join(exp, enc, "final.pt"),
           "epochs": metrics[-1]["epoch"] if metrics else 0,
           "dev_wer": round(min(m["dev_wer"] for m in metrics), 2) if metrics else None,
           "rtf_cpu_runs": eff["rtf_runs"], "rtf_threads": eff["threads"],
           "model_config": config["model"]}
    if gpu and enc in gpu:
        row["rtf_gpu"] = gpu[enc]["rtf"]
    if sclite:
        row["sclite_agrees"] = all(s["agree"] for s in sclite.values())
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--encoders", required=True, help="space-separated encoder names")
    p.add_argument("--baseline", required=True)
    p.add_argument("--candidate", required=True)
    p.add_argument("--test-sets", default="test_real test_synth")
    p.add_argument("--device", default="cpu", help="the device the models were trained on")
    args = p.parse_args()
    exp, encoders, test_sets = args.exp_dir, args.encoders.split(), args.test_sets.split()
    try:
        efficiency = load_json(os.path.join(exp, "efficiency.json"), "stage 6")
        gpu_path = os.path.join(exp, f"efficiency_{args.device.replace(':', '_')}.json")
        gpu = load_json(gpu_path, "stage 6") if args.device != "cpu" and os.path.isfile(
            gpu_path) else None
        rows = [encoder_row(exp, enc, efficiency, test_sets, gpu) for enc in encoders]
        stats = load_json(os.path.join(args.data_dir, "corpus_stats.json"), "stage 0")
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
    intro = fill(f"""Every encoder was trained with the same CTC recipe ({first['epochs']} epochs,
        AdamW lr {config['optim']['lr']}, {config['schedule']['name']} schedule, {specaug},
        batches of {config['data']['max_frames']} frames, {tokens}) on the same corpus, and
        decoded greedily (no language model). Produced by `recipes/telephony_mini/run.sh`
        (stage 7) from the files under `{exp}/`; machine: {os.cpu_count()} CPU cores ({cpu}),
        torch {torch.__version__}, training device {args.device}.""")
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
        compare-models`).""",
        """WER: greedy decoding, scored with sclite's alignment rules (`blspeech score`);
        "Pareto": the test sets on which no other encoder has both fewer GFLOPs and a lower
        WER.""",
        "train min: wall-clock training time (all epochs, dev evaluation included)."))
    preamble = (f"# telephony_mini results\n\n{intro}\n\nCorpus (`{args.data_dir}/`):\n\n"
                + "\n".join(split_lines) + f"\n\n## Results\n\n{bullets}\n\n")
    epilogue = ""
    sclite = [r.get("sclite_agrees") for r in rows if "sclite_agrees" in r]
    if sclite:
        epilogue += ("\nNIST sclite " + ("gives the same error counts for every decode."
                                         if all(sclite) else
                                         "DISAGREES on some decodes: see decode_*/sclite.json.")
                     + "\n")
    epilogue += ("\nOne training run per encoder (one seed); what differences of this size mean "
                 "is discussed\nunder Results in recipes/telephony_mini/README.md.\n")
    if any("rtf_gpu" in r for r in rows):
        epilogue += "\nGPU RTF (same measurement on " + args.device + "): " + ", ".join(
            f"{r['encoder']} {r['rtf_gpu']:.5f}" for r in rows if "rtf_gpu" in r) + "\n"
    try:
        paths = write_report(rows, exp, test_sets, baseline=args.baseline,
                             candidate=args.candidate, preamble=preamble, epilogue=epilogue)
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    text = open(paths["md"], encoding="utf-8").read()
    print(text[text.index("## Results"):])
    print(f"written: {paths['md']}, {paths['json']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
