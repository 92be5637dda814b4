"""Training commands: ``train-tokenizer``, ``train`` (CTC or hybrid head; runs under
torchrun for DDP)."""

from __future__ import annotations

import argparse
import json
import sys

from blspeech.cli.common import UserError, overrides, positive


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from blspeech.training.config import train_tokenizer_for

    summary = train_tokenizer_for(args.data_dir, args.out_dir, kind=args.kind,
                                  vocab_size=args.vocab_size, case=args.case,
                                  remove_punctuation=args.remove_punctuation)
    print(json.dumps(summary))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from blspeech.training import distributed as dist_utils

    try:
        from blspeech.training.config import build_config, read_config_file
        from blspeech.training.trainer import train

        config = build_config(read_config_file(args.config), overrides(args.set))
        summary = train(config, train_dir=args.train_dir, dev_dir=args.dev_dir,
                        tokenizer_dir=args.tokenizer_dir, exp_dir=args.exp_dir,
                        device=args.device, resume=args.resume, train_ali=args.train_ali,
                        dev_ali=args.dev_ali)
    except UserError as e:
        # Every rank stops with the same error; one message per node is enough.
        if dist_utils.env_ranks()[2] == 0:
            print(f"blspeech train: error: {' '.join(str(e).split())}", file=sys.stderr,
                  flush=True)
        return 2
    if dist_utils.env_ranks()[0] == 0:
        print(json.dumps(summary), flush=True)
    return 0


def _add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a character or BPE tokenizer on a data dir's transcripts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Normalize DATA_DIR/text, train a tokenizer (blank id 0, <unk> id 1) and write\n"
            "OUT_DIR/tokens.txt, OUT_DIR/bpe.model (BPE) and OUT_DIR/tokenizer.pt (tokenizer\n"
            "and normalizer, for 'blspeech train --tokenizer-dir'). Prints a JSON summary."),
        epilog=("examples:\n"
                "  blspeech train-tokenizer data/train data/lang_char --kind char --case lower\n"
                "  blspeech train-tokenizer data/train data/lang_bpe500 --vocab-size 500 "
                "--remove-punctuation"),
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="Kaldi data dir with a text file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="tokenizer dir to write")
    p.add_argument("--kind", choices=("bpe", "char"), default="bpe",
                   help="sentencepiece BPE or characters (default: bpe)")
    p.add_argument("--vocab-size", type=positive, default=256, metavar="N",
                   help="BPE vocabulary size including <blank> and <unk> (default: 256)")
    p.add_argument("--case", choices=("keep", "lower", "upper"), default="keep",
                   help="case normalization of the transcripts (default: keep)")
    p.add_argument("--remove-punctuation", action="store_true",
                   help="drop punctuation (apostrophes inside words stay)")
    p.set_defaults(func=cmd_train_tokenizer)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a CTC or HMM-hybrid acoustic model (one process, or DDP under torchrun)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train an encoder from the registry with a CTC head (tokens of --tokenizer-dir) or\n"
            "an HMM-hybrid head (head.type hybrid: frame cross-entropy against the pdf-id\n"
            "alignments of --train-ali/--dev-ali, e.g. from a Kaldi GMM system) on Kaldi data\n"
            "dirs. The YAML config has sections model, head, data, specaug, optim, schedule\n"
            "and training (see blspeech/configs/ctc_small.yaml, hybrid_tiny.yaml); --set\n"
            "section.key=value overrides any key.\n"
            "Writes EXP_DIR/epoch-N.pt, checkpoint-STEP.pt, last.pt, best.pt, avg_last_N.pt,\n"
            "metrics.jsonl, train.log, config.yaml and TensorBoard logs (tb/), and prints a\n"
            "JSON summary. Re-running continues from EXP_DIR/last.pt (the same batches, random\n"
            "numbers and learning rates as an uninterrupted run).\n\n"
            "DDP: torchrun --nproc-per-node N -m blspeech train ... (NCCL on CUDA, Gloo on\n"
            "CPU; multi-node with torchrun's --nnodes/--node-rank/--rdzv-endpoint). The global\n"
            "batch is N x accum_grad batches of data.max_frames frames."),
        epilog=("examples:\n"
                "  blspeech train --config ctc_small --train-dir data/train --dev-dir data/dev \\\n"
                "      --tokenizer-dir data/lang_bpe --exp-dir exp/ctc_bl\n"
                "  blspeech train --config conf/ctc.yaml --set model.name=resnet_am_small \\\n"
                "      --set training.epochs=50 ... --exp-dir exp/ctc_base\n"
                "  blspeech train --config hybrid_tiny --set head.num_pdfs=3456 \\\n"
                "      --train-dir data/train --dev-dir data/dev --exp-dir exp/hybrid \\\n"
                "      --train-ali 'ark:gunzip -c exp/tri4_ali/ali.*.gz | ali-to-pdf \\\n"
                "          exp/tri4_ali/final.mdl ark:- ark:- |' --dev-ali ...\n"
                "\nexit codes: 0 success, 2 bad config/data (one line on stderr)."),
    )
    p.add_argument("--config", required=True, metavar="YAML",
                   help="training config file, or the name of a packaged one (ctc_tiny, "
                        "ctc_small)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.002 or --set "
                        "specaug=null (YAML values; repeatable)")
    p.add_argument("--train-dir", required=True, metavar="DIR", help="training data dir")
    p.add_argument("--dev-dir", required=True, metavar="DIR",
                   help="dev data dir (dev loss and greedy WER after every epoch)")
    p.add_argument("--tokenizer-dir", metavar="DIR",
                   help="tokenizer dir written by 'blspeech train-tokenizer' (CTC head, and "
                        "the hybrid head's token topology)")
    p.add_argument("--train-ali", metavar="RSPECIFIER",
                   help="hybrid head: pdf-id alignments of the training data (int-vector "
                        "ark/scp, e.g. 'scp:exp/ali/pdf.scp' or 'ark:... | ali-to-pdf ... |')")
    p.add_argument("--dev-ali", metavar="RSPECIFIER",
                   help="hybrid head: pdf-id alignments of the dev data")
    p.add_argument("--exp-dir", required=True, metavar="DIR",
                   help="output dir: checkpoints, logs, metrics")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available (GPU LOCAL_RANK under torchrun)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from EXP_DIR/last.pt when it exists; --no-resume deletes "
                        "an earlier run's checkpoints and starts over (default: resume)")
    p.set_defaults(func=cmd_train)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    for add in (_add_train_tokenizer, _add_train):
        add(sub)
