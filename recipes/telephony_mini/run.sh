#!/usr/bin/env bash
# telephony_mini: build an 8 kHz telephone-speech corpus from Debian packages, train the
# baseline ResNet, the bL-ResNet and two peer encoders (QuartzNet, Conformer) with one CTC
# recipe, decode, score, and compare accuracy against compute.
#
# Usage: recipes/telephony_mini/run.sh [options]
#
# Stages:
#   0  corpus: DATA/{train,dev,test_real,test_synth} (local/prepare_corpus.py)
#   1  features: 40-bin log-mel filterbanks at 8 kHz for every split, global CMVN of train
#   2  tokenizer: BPE pieces (sentencepiece) of train's transcripts (DATA/lang_bpe<N>)
#   3  train each encoder of --encoders with --config (EXP/<encoder>/, final.pt, and
#      final.bundle: the model with its front-end, CMVN and tokenizer in one file for
#      'blspeech transcribe' and blspeech.load_bundle)
#   4  decode every test set with each EXP/<encoder>/final.pt (greedy; text, ctm, wer.*)
#   5  score: NIST sclite on every decode (when installed; Debian package sctk), checked
#      against blspeech's counts in decode_*/wer.json (decode_*/sclite.json)
#   6  compare: params, GFLOPs per second of audio and CPU real-time factor of all
#      encoders, measured side by side in one process (EXP/efficiency.json)
#   7  report: EXP/RESULTS.md, EXP/results.json and EXP/tradeoff.png
#   8  HMM-hybrid head: CTC forced alignment of every split with EXP/<aligner>/final.pt
#      turned into token-topology frame targets (EXP/<aligner>/ali_<split>/pdf.scp), then
#      each encoder of --hybrid-encoders trained on them with --hybrid-config
#      (EXP/hybrid_<encoder>/, final.pt by dev loss)
#   9  hybrid decoding: prior scale and token insertion penalty tuned on dev, Viterbi
#      decoding of the test sets, NIST sclite, frame accuracy against the aligner's
#      targets (EXP/hybrid_<encoder>/hybrid_summary.json, final.bundle with the tuned
#      search settings); EXP/RESULTS_hybrid.md
#
# Every stage can be re-run and an interrupted run resumes: the corpus, feature and
# decoding stages keep finished work, training continues from EXP/<encoder>/last.pt, and
# every output is written under a temporary name and renamed when complete.
#
# Options (default in brackets):
#   --stage N             first stage to run [0]
#   --stop-stage N        last stage to run [9]
#   --quick true|false    a first look in a few minutes: small corpus, 3 epochs, 20 warm-up
#                         steps, results in DATA/quick and EXP/quick (a smoke test of the
#                         pipeline: its models are too undertrained to transcribe) [false]
#   --device DEV          cpu or cuda, for training and decoding (the RTF comparison runs on
#                         the CPU; with cuda it is also measured on the GPU) [cpu]
#   --nj N                parallel jobs for corpus synthesis and features; threads for
#                         the RTF comparison [2]
#   --encoders "A B ..."  registered encoder names [resnet_am_mini bl_resnet_am_mini
#                         quartznet_mini conformer_mini]
#   --baseline NAME       encoder the others are compared with [resnet_am_mini]
#   --candidate NAME      encoder whose efficiency claim RESULTS.md checks [bl_resnet_am_mini]
#   --config YAML         training recipe, the same for every encoder [conf/ctc.yaml]
#   --hybrid-encoders "A B ..."  encoders trained with the hybrid head in stage 8
#                         [resnet_am_mini bl_resnet_am_mini]
#   --aligner NAME        CTC model whose forced alignments give the hybrid targets
#                         [the --baseline]
#   --hybrid-config YAML  hybrid training recipe [conf/hybrid.yaml]
#   --vocab-size N        BPE vocabulary incl. <blank> and <unk>; 0: characters [128]
#   --epochs N            override the config's training.epochs; empty: the config's []
#   --train-args "ARGS"   more 'blspeech train' flags for every encoder, e.g.
#                         "--set optim.lr=0.002" []
#   --data-dir DIR        corpus and features [data]
#   --exp-dir DIR         models, decodes and results [exp]
#   --corpus-args "ARGS"  more local/prepare_corpus.py flags, e.g. "--num-train 1000" []
#   --rtf-utts N          utterances of test_synth decoded for the RTF (0: all) [0]
#   --rtf-repeats N       timed rounds per model for the RTF [9]
#
# Python: the script runs ${PYTHON:-python3}; `make demo` points it at .venv. Paths are
# relative to this recipe's folder, where the script changes to.
#
# Examples:
#   make demo                                     # set-up + this script with defaults
#   recipes/telephony_mini/run.sh --quick true    # a first look
#   recipes/telephony_mini/run.sh --stage 3 --encoders "resnet_am_mini bl_resnet_am_mini"
#   recipes/telephony_mini/run.sh --device cuda --epochs 30
#
# wav.scp entries ending in '|' are shell commands; this corpus has none, and its data
# dirs are built here, so commands stay allowed.

set -euo pipefail

stage=0
stop_stage=9
quick=false
device=cpu
nj=2
encoders="resnet_am_mini bl_resnet_am_mini quartznet_mini conformer_mini"
baseline=resnet_am_mini
candidate=bl_resnet_am_mini
config=conf/ctc.yaml
hybrid_encoders="resnet_am_mini bl_resnet_am_mini"
aligner=
hybrid_config=conf/hybrid.yaml
vocab_size=128
epochs=
train_args=
data_dir=data
exp_dir=exp
corpus_args=
rtf_utts=0
rtf_repeats=9

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../utils/parse_options.sh"

if (( $# > 0 )); then
  echo "$0: unexpected argument '$1' (see $0 --help)" >&2
  exit 2
fi

die() {
  echo "$0: error: $*" >&2
  exit 2
}

cd "$recipe_dir"
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" > /dev/null || die "python interpreter '$PYTHON' not found; set PYTHON"
"$PYTHON" -c 'import blspeech' 2> /dev/null \
  || die "$PYTHON cannot import blspeech; run 'make setup' and set PYTHON=.venv/bin/python"
blspeech() { "$PYTHON" -m blspeech "$@"; }

read -r -a encoder_list <<< "$encoders"
read -r -a hybrid_list <<< "$hybrid_encoders"
aligner=${aligner:-$baseline}
read -r -a extra_train <<< "$train_args"
read -r -a extra_corpus <<< "$corpus_args"
(( ${#encoder_list[@]} > 0 )) || die "--encoders is empty"
test_sets=(test_real test_synth)
splits=(train dev "${test_sets[@]}")
if [[ $quick == true ]]; then
  data_dir=$data_dir/quick
  exp_dir=$exp_dir/quick
  extra_corpus=(--quick true ${extra_corpus[@]+"${extra_corpus[@]}"})
  epochs=${epochs:-3}
  # 29 updates per epoch: reach the peak learning rate within the first epoch.
  quick_overrides=(--set schedule.warmup_steps=20)
fi
[[ -f $config ]] || die "--config $config does not exist"
[[ -f $hybrid_config ]] || die "--hybrid-config $hybrid_config does not exist"
if [[ $vocab_size == 0 ]]; then
  lang=$data_dir/lang_char
  tokenizer_args=(--kind char)
else
  lang=$data_dir/lang_bpe$vocab_size
  tokenizer_args=(--kind bpe --vocab-size "$vocab_size")
fi
train_overrides=(${quick_overrides[@]+"${quick_overrides[@]}"})
[[ -n $epochs ]] && train_overrides+=(--set "training.epochs=$epochs")
train_overrides+=(${extra_train[@]+"${extra_train[@]}"})

if (( stage <= 0 && 0 <= stop_stage )); then
  echo "stage 0: corpus in $data_dir"
  "$PYTHON" local/prepare_corpus.py --data-dir "$data_dir" --nj "$nj" \
    ${extra_corpus[@]+"${extra_corpus[@]}"}
fi

if (( stage <= 1 && 1 <= stop_stage )); then
  echo "stage 1: 40-bin log-mel features at 8 kHz and global CMVN"
  for split in "${splits[@]}"; do
    # compute-feats skips finished jobs, so a killed run resumes here.
    blspeech compute-feats "$data_dir/$split" --nj "$nj" --sample-rate 8000 \
      --num-mel-bins 40 --no-progress > /dev/null
  done
  blspeech compute-cmvn "$data_dir/train" > /dev/null
  for split in "${splits[@]}"; do
    blspeech validate-data-dir "$data_dir/$split" > /dev/null
  done
fi

if (( stage <= 2 && 2 <= stop_stage )); then
  echo "stage 2: tokenizer in $lang"
  if [[ ! -f $lang/tokenizer.pt ]]; then
    blspeech train-tokenizer "$data_dir/train" "$lang" "${tokenizer_args[@]}" --case lower \
      > /dev/null
  fi
fi

if (( stage <= 3 && 3 <= stop_stage )); then
  for enc in "${encoder_list[@]}"; do
    echo "stage 3: training $enc in $exp_dir/$enc"
    mkdir -p "$exp_dir/$enc"
    # Resumes from last.pt; a finished run returns at once. stdout: a JSON summary.
    blspeech train --config "$config" --set "model.name=$enc" \
      ${train_overrides[@]+"${train_overrides[@]}"} \
      --train-dir "$data_dir/train" --dev-dir "$data_dir/dev" --tokenizer-dir "$lang" \
      --exp-dir "$exp_dir/$enc" --device "$device" > "$exp_dir/$enc/.summary.json.tmp"
    mv "$exp_dir/$enc/.summary.json.tmp" "$exp_dir/$enc/train_summary.json"
    "$PYTHON" ../utils/select_final.py "$exp_dir/$enc"
    blspeech make-bundle "$exp_dir/$enc/final.pt" "$exp_dir/$enc/final.bundle" > /dev/null
  done
fi

if (( stage <= 4 && 4 <= stop_stage )); then
  for enc in "${encoder_list[@]}"; do
    for t in "${test_sets[@]}"; do
      out=$exp_dir/$enc/decode_$t
      if [[ -f $out/wer.json && $out/wer.json -nt $exp_dir/$enc/final.pt ]]; then
        echo "stage 4: $out is up to date"
        continue
      fi
      echo "stage 4: decoding $t with $enc"
      blspeech decode "$exp_dir/$enc/final.pt" "$data_dir/$t" "$out" --device "$device" \
        --no-progress > /dev/null
    done
  done
fi

if (( stage <= 5 && 5 <= stop_stage )); then
  echo "stage 5: scoring"
  for enc in "${encoder_list[@]}"; do
    for t in "${test_sets[@]}"; do
      "$PYTHON" local/score_sclite.py "$data_dir/$t" "$exp_dir/$enc/decode_$t"
    done
  done
fi

if (( stage <= 6 && 6 <= stop_stage )); then
  echo "stage 6: params, GFLOPs and RTF of ${encoder_list[*]}, side by side"
  models=()
  for enc in "${encoder_list[@]}"; do models+=("$enc=$exp_dir/$enc/final.pt"); done
  blspeech compare-models "${models[@]}" --data-dir "$data_dir/test_synth" --device cpu \
    --threads "$nj" --max-utts "$rtf_utts" --repeats "$rtf_repeats" --no-progress \
    --out "$exp_dir/efficiency.json" > /dev/null
  if [[ $device == cuda* ]]; then
    blspeech compare-models "${models[@]}" --data-dir "$data_dir/test_synth" \
      --device "$device" --max-utts "$rtf_utts" --repeats "$rtf_repeats" --no-progress \
      --out "$exp_dir/efficiency_${device//:/_}.json" > /dev/null
  fi
fi

if (( stage <= 7 && 7 <= stop_stage )); then
  echo "stage 7: report"
  "$PYTHON" local/make_report.py --data-dir "$data_dir" --exp-dir "$exp_dir" \
    --encoders "${encoder_list[*]}" --baseline "$baseline" --candidate "$candidate" \
    --test-sets "${test_sets[*]}" --device "$device"
fi

if (( stage <= 8 && 8 <= stop_stage )); then
  [[ -f $exp_dir/$aligner/final.pt ]] \
    || die "stage 8 aligns with $exp_dir/$aligner/final.pt, which does not exist: train \
the --aligner ($aligner) in stage 3 first"
  for split in "${splits[@]}"; do
    ali=$exp_dir/$aligner/ali_$split
    if [[ -f $ali/topology && $ali/topology -nt $exp_dir/$aligner/final.pt ]]; then
      echo "stage 8: $ali is up to date"
      continue
    fi
    echo "stage 8: aligning $split with $aligner (token-topology targets in $ali)"
    blspeech align "$exp_dir/$aligner/final.pt" "$data_dir/$split" "$ali" --hybrid-targets \
      --device "$device" --no-progress > /dev/null
  done
  for enc in "${hybrid_list[@]}"; do
    hexp=$exp_dir/hybrid_$enc
    echo "stage 8: training $enc with the hybrid head in $hexp"
    mkdir -p "$hexp"
    blspeech train --config "$hybrid_config" --set "model.name=$enc" \
      ${train_overrides[@]+"${train_overrides[@]}"} \
      --train-dir "$data_dir/train" --dev-dir "$data_dir/dev" --tokenizer-dir "$lang" \
      --train-ali "scp:$exp_dir/$aligner/ali_train/pdf.scp" \
      --dev-ali "scp:$exp_dir/$aligner/ali_dev/pdf.scp" \
      --exp-dir "$hexp" --device "$device" > "$hexp/.summary.json.tmp"
    mv "$hexp/.summary.json.tmp" "$hexp/train_summary.json"
    "$PYTHON" ../utils/select_final.py "$hexp" dev_loss
  done
fi

if (( stage <= 9 && 9 <= stop_stage )); then
  for enc in "${hybrid_list[@]}"; do
    hexp=$exp_dir/hybrid_$enc
    if [[ -f $hexp/hybrid_summary.json && $hexp/hybrid_summary.json -nt $hexp/final.pt ]]; then
      echo "stage 9: $hexp/hybrid_summary.json is up to date"
    else
      echo "stage 9: tuning on dev, decoding and frame accuracy of $hexp/final.pt"
      "$PYTHON" local/hybrid_decode.py --model "$hexp/final.pt" --data-dir "$data_dir" \
        --ali-dir "$exp_dir/$aligner" --test-sets "${test_sets[*]}" --device "$device"
    fi
    for t in "${test_sets[@]}"; do
      "$PYTHON" local/score_sclite.py "$data_dir/$t" "$hexp/decode_$t"
    done
    read -r prior_scale penalty < <("$PYTHON" -c 'import json, sys
d = json.load(open(sys.argv[1])); print(d["prior_scale"], d["insertion_penalty"])' \
      "$hexp/hybrid_summary.json")
    blspeech make-bundle "$hexp/final.pt" "$hexp/final.bundle" --prior-scale "$prior_scale" \
      --insertion-penalty "$penalty" > /dev/null
  done
  echo "stage 9: report"
  "$PYTHON" local/hybrid_report.py --exp-dir "$exp_dir" --encoders "${hybrid_list[*]}" \
    --ctc-encoders "${encoder_list[*]}" --aligner "$aligner" --test-sets "${test_sets[*]}"
fi
