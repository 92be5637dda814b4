#!/usr/bin/env bash
# telephony_mini: build an 8 kHz telephone-speech corpus from Debian packages, train the
# baseline ResNet and the bL-ResNet with one CTC recipe (peer encoders on request), decode
# greedily and with a word n-gram LM, score, test the difference for significance, and
# compare accuracy against compute; then fine-tune both with an HMM-hybrid head on a
# monophone GMM-HMM's alignments and decode them with an HLG graph of the same LM.
#
# Usage: recipes/telephony_mini/run.sh [options]
#
# Stages:
#   0  corpus: DATA/{train,dev,test_real,test_synth} (local/prepare_corpus.py), and
#      speed-perturbed copies of the --sp-speakers' training utterances
#      (DATA/train_spk_sp: sox 'speed' at each of --sp-factors)
#   1  features: 40-bin log-mel filterbanks at 8 kHz for every split; the training set
#      DATA/train_sp = train + train_spk_sp (just train when --sp-factors is empty) and
#      its global CMVN
#   2  tokenizer: BPE pieces (sentencepiece) of train's transcripts (DATA/lang_bpe<N>), and
#      a word 3-gram LM of train's transcripts only (DATA/lm/3gram.arpa; held-out
#      sentences stay out of every LM and lexicon; the perturbed copies are left out, so
#      no sentence counts more than once)
#   3  train each encoder of --encoders on DATA/train_sp with --config, or
#      conf/ctc_<encoder>.yaml where that exists (EXP/<encoder>/, final.pt, and
#      final.bundle: the model with its front-end, CMVN and tokenizer in one file for
#      'blspeech transcribe' and blspeech.load_bundle); with --seeds N, seeds 1..N-1 in
#      EXP/<encoder>_seed<k>/; --train-jobs trainings at a time (log: EXP/<run>/stage3.log)
#   4  decode every test set with each model: greedy (EXP/<run>/decode_<test>/),
#      lexicon + LM beam search with the LM weight tuned on dev (decode_lm_<test>/,
#      lm_tuning.json), and WFST search of a TLG graph of the same LM with the acoustic
#      scale and word penalty tuned on dev (DATA/graph_<lang>/, decode_wfst_<test>/,
#      wfst_tuning.json; skipped with --wfst false); text, ctm, wer.*
#   5  score: NIST sclite on every decode (when installed; Debian package sctk), checked
#      against blspeech's counts in decode_*/wer.json (decode_*/sclite.json)
#   6  compare: params, GFLOPs per second of audio and CPU real-time factor of all
#      encoders, measured side by side in one process, with per-round paired ratios
#      to the first encoder (EXP/efficiency.json)
#   7  report: EXP/RESULTS.md (with NIST's MAPSSWE significance test of --candidate
#      against --baseline per test set, and the mean and spread over seeds),
#      EXP/results.json, EXP/tradeoff.png and EXP/learning_curves.png (dev WER
#      against training wall minutes)
#   8  HMM-hybrid head: a monophone GMM-HMM ('blspeech align-gmm', EXP/gmm/) trained on
#      train aligns every split; each encoder of --hybrid-encoders is trained on its pdfs
#      with --hybrid-config (conf/hybrid_gmm.yaml), starting from the encoder of its CTC
#      model of stage 3 (--hybrid-init), in EXP/hybrid_gmm_<encoder>/ (final.pt by dev
#      loss). With --aligner <CTC model>: that model's forced alignments turned into
#      token-topology targets (EXP/<aligner>/ali_<split>/pdf.scp, EXP/hybrid_<encoder>/,
#      conf/hybrid.yaml)
#   9  hybrid decoding: an HLG graph of the GMM's HMMs, its lexicon and the 3-gram LM
#      (EXP/gmm/graph), prior and acoustic scale tuned on dev, WFST decoding, and
#      flashlight's lexicon search over the phones with and without the LM, tuned on dev
#      (local/hybrid_gmm_decode.py; decode_SET, decode_lm_SET, decode_nolm_SET), frame
#      accuracy against the GMM's alignments; EXP/RESULTS_hybrid_gmm.md, and the report
#      of stage 7 again with the hybrid head's section (WERs, MAPSSWE of bL against the
#      baseline and of the hybrid against the CTC head). With --aligner <CTC model>:
#      prior scale and token insertion penalty tuned on dev, Viterbi decoding over the
#      token loop, NIST sclite (EXP/hybrid_<encoder>/hybrid_summary.json, final.bundle
#      with the tuned search settings); EXP/RESULTS_hybrid.md
#
# Every stage can be re-run and an interrupted run resumes: the corpus, feature and
# decoding stages keep finished work, training continues from EXP/<encoder>/last.pt, and
# every output is written under a temporary name and renamed when complete.
#
# Options (default in brackets):
#   --stage N             first stage to run [0]
#   --stop-stage N        last stage to run [9; 7 with --quick true]
#   --quick true|false    a first look in a few minutes: small corpus, 3 epochs, 20 warm-up
#                         steps, results in DATA/quick and EXP/quick (a smoke test of the
#                         pipeline: its models are too undertrained to transcribe) [false]
#   --device DEV          cpu or cuda, for training and decoding (the RTF comparison runs on
#                         the CPU; with cuda it is also measured on the GPU) [cpu]
#   --nj N                parallel jobs for corpus synthesis and features; threads for
#                         the RTF comparison [2]
#   --encoders "A B ..."  registered encoder names; the first is the paired-RTF reference
#                         [resnet_am_mini bl_resnet_am_mini]; the peers quartznet_mini and
#                         conformer_mini are optional (README, "Peers": QuartzNet does not
#                         leave its all-blank stage in this budget; the Conformer is not
#                         yet in the seeded comparison)
#   --seeds N             train every encoder N times (seeds 0..N-1); RESULTS.md gives
#                         mean and spread [1]
#   --train-jobs N        trainings run at the same time, each with --nj / N threads (on 2
#                         cores two 1-thread trainings get 1.2-1.5x the steps per second
#                         of one 2-thread training: README); empty: --nj on the CPU, 1 with
#                         --device cuda []
#   --baseline NAME       encoder the others are compared with [resnet_am_mini]
#   --candidate NAME      encoder whose efficiency claim RESULTS.md checks [bl_resnet_am_mini]
#   --config YAML         training recipe for every encoder without its own
#                         conf/ctc_<encoder>.yaml [conf/ctc.yaml]
#   --hybrid-encoders "A B ..."  encoders trained with the hybrid head in stage 8
#                         [resnet_am_mini bl_resnet_am_mini]
#   --aligner NAME        gmm: a monophone GMM-HMM's alignments give the hybrid targets;
#                         or a CTC model of --encoders: its forced alignments [gmm]
#   --hybrid-init true|false  each hybrid training starts from the encoder of the same
#                         encoder's CTC model (EXP/<encoder>/final.pt) where stage 3
#                         trained one (training.init_encoder) [true]
#   --hybrid-config YAML  hybrid training recipe [conf/hybrid.yaml; with --aligner gmm
#                         conf/hybrid_gmm.yaml]
#   --wfst true|false     WFST decoding in stage 4 (needs the 'wfst' extra) [true]
#   --vocab-size N        BPE vocabulary incl. <blank> and <unk>; 0: characters [128]
#   --epochs N            override the config's training.epochs; empty: the config's []
#   --train-args "ARGS"   more 'blspeech train' flags for every encoder, e.g.
#                         "--set optim.lr=0.002" []
#   --data-dir DIR        corpus and features [data]
#   --exp-dir DIR         models, decodes and results [exp]
#   --num-train N         training utterances of the corpus (not with --quick) [5000]
#   --sp-speakers "A ..." speakers of train whose utterances get speed-perturbed copies:
#                         the corpus's one real voice, whose share of train they raise
#                         from 8% to 21% (README, run M) [ast_allison]
#   --sp-factors F,F      speed factors of those copies; empty: no copies [0.9,1.1]
#   --corpus-args "ARGS"  more local/prepare_corpus.py flags, e.g. "--num-dev 400" []
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
# wav.scp entries ending in '|' are shell commands: here only the speed-perturbed copies
# (`sox ... speed F |`), which stage 0 writes itself, so commands stay allowed; with
# BLSPEECH_NO_WAVSCP_COMMANDS=1 run with --sp-factors ''.

set -euo pipefail

stage=0
stop_stage=
quick=false
device=cpu
nj=2
encoders="resnet_am_mini bl_resnet_am_mini"
seeds=1
train_jobs=
baseline=resnet_am_mini
candidate=bl_resnet_am_mini
config=conf/ctc.yaml
hybrid_encoders="resnet_am_mini bl_resnet_am_mini"
aligner=gmm
hybrid_init=true
hybrid_config=
vocab_size=128
wfst=true
epochs=
train_args=
data_dir=data
exp_dir=exp
num_train=5000
sp_speakers=ast_allison
sp_factors=0.9,1.1
corpus_args=
rtf_utts=0
rtf_repeats=9

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../utils/parse_options.sh"
. "$recipe_dir/../utils/stage_needs.sh"

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
read -r -a extra_train <<< "$train_args"
read -r -a extra_corpus <<< "$corpus_args"
(( ${#encoder_list[@]} > 0 )) || die "--encoders is empty"
[[ $seeds =~ ^[1-9][0-9]*$ ]] || die "--seeds must be a positive integer, got '$seeds'"
[[ $wfst == true || $wfst == false ]] || die "--wfst must be true or false, got '$wfst'"
[[ $hybrid_init == true || $hybrid_init == false ]] \
  || die "--hybrid-init must be true or false, got '$hybrid_init'"
# A run is one training of an encoder with one seed: seed 0 in EXP/<encoder>, seed k in
# EXP/<encoder>_seed<k>. Seed by seed, so that the encoders train side by side.
runs=("${encoder_list[@]}")
for (( k = 1; k < seeds; k++ )); do
  for enc in "${encoder_list[@]}"; do runs+=("${enc}_seed$k"); done
done
run_encoder() { echo "${1%_seed*}"; }
run_seed() { [[ $1 == *_seed* ]] && echo "${1##*_seed}" || echo 0; }
test_sets=(test_real test_synth)
splits=(train dev "${test_sets[@]}")
# --quick stops before the hybrid head: a first look stays within a few minutes.
if [[ -z $stop_stage ]]; then
  [[ $quick == true ]] && stop_stage=7 || stop_stage=9
fi
if [[ $quick == true ]]; then
  data_dir=$data_dir/quick
  exp_dir=$exp_dir/quick
  extra_corpus=(--quick true ${extra_corpus[@]+"${extra_corpus[@]}"})
  epochs=${epochs:-3}
  # 29 updates per epoch: reach the peak learning rate within the first epoch.
  quick_overrides=(--set schedule.warmup_steps=20)
  # One point of the WFST grid instead of 21: the quick models' search is slow.
  wfst_grid=(--acoustic-scales 0.7 --word-penalties -3)
else
  extra_corpus=(--num-train "$num_train" ${extra_corpus[@]+"${extra_corpus[@]}"})
fi
lm=$data_dir/lm/3gram.arpa
# The hybrid targets: a CTC model's token topology, or a monophone GMM-HMM's pdfs.
if [[ $aligner == gmm ]]; then
  ali_root=$exp_dir/gmm
  hybrid_prefix=hybrid_gmm_
  hybrid_config=${hybrid_config:-conf/hybrid_gmm.yaml}
else
  ali_root=$exp_dir/$aligner
  hybrid_prefix=hybrid_
  hybrid_config=${hybrid_config:-conf/hybrid.yaml}
fi
# ali_scp SPLIT: the hybrid targets of a split (align-gmm puts train's at the top).
ali_scp() {
  if [[ $aligner == gmm && $1 == train ]]; then echo "$ali_root/pdf.scp"
  else echo "$ali_root/ali_$1/pdf.scp"; fi
}
[[ -f $config ]] || die "--config $config does not exist"
[[ -f $hybrid_config ]] || die "--hybrid-config $hybrid_config does not exist"
if [[ $vocab_size == 0 ]]; then
  lang=$data_dir/lang_char
  tokenizer_args=(--kind char)
else
  lang=$data_dir/lang_bpe$vocab_size
  tokenizer_args=(--kind bpe --vocab-size "$vocab_size")
fi
graph=$data_dir/graph_$(basename "$lang")
# The training set: train plus the speed-perturbed copies of --sp-speakers' utterances.
sp_part=$data_dir/train_spk_sp
train_set=$data_dir/train_sp
feat_dirs=("${splits[@]/#/$data_dir/}")
if [[ -n $sp_factors ]]; then
  [[ -n $sp_speakers ]] || die "--sp-factors $sp_factors needs --sp-speakers"
  feat_dirs+=("$sp_part")
fi
if [[ -z $train_jobs ]]; then
  train_jobs=1
  [[ $device == cpu ]] && train_jobs=$nj
fi
[[ $train_jobs =~ ^[1-9][0-9]*$ ]] || die "--train-jobs must be a positive integer, got '$train_jobs'"
(( train_jobs > ${#runs[@]} )) && train_jobs=${#runs[@]}
train_threads=$(( nj / train_jobs > 0 ? nj / train_jobs : 1 ))
decodings=(decode decode_lm)
[[ $wfst == true ]] && decodings+=(decode_wfst)
train_overrides=(${quick_overrides[@]+"${quick_overrides[@]}"})
[[ -n $epochs ]] && train_overrides+=(--set "training.epochs=$epochs")
train_overrides+=(${extra_train[@]+"${extra_train[@]}"})

if (( stage <= 0 && 0 <= stop_stage )); then
  echo "stage 0: corpus in $data_dir"
  "$PYTHON" local/prepare_corpus.py --data-dir "$data_dir" --nj "$nj" \
    ${extra_corpus[@]+"${extra_corpus[@]}"}
  if [[ -n $sp_factors && ! ( -f $sp_part/wav.scp && $sp_part/wav.scp -nt $data_dir/train/wav.scp ) ]]; then
    echo "stage 0: speed-perturbed copies ($sp_factors) of $sp_speakers in $sp_part"
    tr ' ' '\n' <<< "$sp_speakers" | grep -v '^$' > "$data_dir/sp_speakers.txt"
    blspeech subset-data-dir "$data_dir/train" "$sp_part.src" \
      --spk-list "$data_dir/sp_speakers.txt" > /dev/null
    blspeech perturb-speed "$sp_part.src" "$sp_part" --factors "$sp_factors" > /dev/null
    rm -rf "$sp_part.src"
  fi
fi

if (( stage <= 1 && 1 <= stop_stage )); then
  for dir in "${feat_dirs[@]}"; do stage_needs 1 0 "$dir/wav.scp"; done
  echo "stage 1: 40-bin log-mel features at 8 kHz and global CMVN"
  for dir in "${feat_dirs[@]}"; do
    # compute-feats skips finished jobs, so a killed run resumes here.
    blspeech compute-feats "$dir" --nj "$nj" --sample-rate 8000 \
      --num-mel-bins 40 --no-progress > /dev/null
  done
  if [[ -n $sp_factors ]]; then
    blspeech combine-data "$train_set" "$data_dir/train" "$sp_part" > /dev/null
  else
    blspeech subset-data-dir "$data_dir/train" "$train_set" --first \
      "$(wc -l < "$data_dir/train/utt2spk")" > /dev/null
  fi
  blspeech compute-cmvn "$train_set" > /dev/null
  # train alone is the hybrid head's training set (stage 8: its alignments have no copies).
  blspeech compute-cmvn "$data_dir/train" > /dev/null
  for dir in "${feat_dirs[@]}" "$train_set"; do
    blspeech validate-data-dir "$dir" > /dev/null
  done
fi

if (( stage <= 2 && 2 <= stop_stage )); then
  stage_needs 2 0 "$data_dir/train/text"
  echo "stage 2: tokenizer in $lang"
  if [[ ! -f $lang/tokenizer.pt ]]; then
    blspeech train-tokenizer "$data_dir/train" "$lang" "${tokenizer_args[@]}" --case lower \
      > /dev/null
  fi
  if [[ ! -f $lm || $lm -ot $lang/tokenizer.pt ]]; then
    echo "stage 2: word 3-gram LM of the training transcripts in $lm"
    mkdir -p "$(dirname "$lm")"
    blspeech train-lm "$data_dir/train" "$lm" --order 3 --tokenizer-dir "$lang" > /dev/null
  fi
fi

# One training of stage 3: the model, its final.pt (select_final.py) and final.bundle.
train_run() {
  local run=${1#"$exp_dir"/} enc conf
  enc=$(run_encoder "$run")
  conf=$config
  [[ -f conf/ctc_$enc.yaml ]] && conf=conf/ctc_$enc.yaml
  echo "stage 3: training $enc (seed $(run_seed "$run"), $conf) in $exp_dir/$run"
  # Resumes from last.pt; a finished run returns at once. stdout: a JSON summary.
  OMP_NUM_THREADS=$train_threads blspeech train --config "$conf" --set "model.name=$enc" \
    --set "training.seed=$(run_seed "$run")" \
    ${train_overrides[@]+"${train_overrides[@]}"} \
    --train-dir "$train_set" --dev-dir "$data_dir/dev" --tokenizer-dir "$lang" \
    --exp-dir "$exp_dir/$run" --device "$device" > "$exp_dir/$run/.summary.json.tmp"
  mv "$exp_dir/$run/.summary.json.tmp" "$exp_dir/$run/train_summary.json"
  "$PYTHON" ../utils/select_final.py "$exp_dir/$run"
  blspeech make-bundle "$exp_dir/$run/final.pt" "$exp_dir/$run/final.bundle" > /dev/null
}

# in_parallel STAGE FN WHAT DIR...: FN DIR for every DIR, --train-jobs at a time, each logging to
# DIR/stageSTAGE.log; a failed one is reported with the end of its log once its batch is
# done, and the script stops.
in_parallel() {
  local stage_n=$1 fn=$2 what=$3 i k dir
  shift 3
  local dirs=("$@") batch failed
  pids=()
  trap 'kill ${pids[@]+"${pids[@]}"} 2> /dev/null; exit 130' INT TERM
  for (( i = 0; i < ${#dirs[@]}; i += train_jobs )); do
    batch=("${dirs[@]:i:train_jobs}")
    pids=()
    for dir in "${batch[@]}"; do
      mkdir -p "$dir"
      echo "stage $stage_n: $what in $dir ($train_threads threads; log: $dir/stage$stage_n.log)"
      "$fn" "$dir" > "$dir/stage$stage_n.log" 2>&1 &
      pids+=($!)
    done
    failed=()
    for k in "${!pids[@]}"; do
      wait "${pids[k]}" || failed+=("${batch[k]}")
    done
    for dir in ${failed[@]+"${failed[@]}"}; do
      echo "$0: stage $stage_n failed in $dir; the end of $dir/stage$stage_n.log:" >&2
      tail -n 5 "$dir/stage$stage_n.log" >&2
    done
    (( ${#failed[@]} == 0 )) || exit 1
  done
  pids=()
  trap - INT TERM
}

if (( stage <= 3 && 3 <= stop_stage )); then
  stage_needs 3 1 "$train_set/feats.scp" "$data_dir/dev/feats.scp"
  stage_needs 3 2 "$lang/tokenizer.pt"
  in_parallel 3 train_run training "${runs[@]/#/$exp_dir/}"
fi

if (( stage <= 4 && 4 <= stop_stage )); then
  for run in "${runs[@]}"; do stage_needs 4 3 "$exp_dir/$run/final.pt"; done
  stage_needs 4 2 "$lm"
  for run in "${runs[@]}"; do
    for t in "${test_sets[@]}"; do
      out=$exp_dir/$run/decode_$t
      if [[ -f $out/wer.json && $out/wer.json -nt $exp_dir/$run/final.pt ]]; then
        echo "stage 4: $out is up to date"
        continue
      fi
      echo "stage 4: decoding $t with $run (greedy)"
      blspeech decode "$exp_dir/$run/final.pt" "$data_dir/$t" "$out" --device "$device" \
        --no-progress > /dev/null
    done
    tuning=$exp_dir/$run/lm_tuning.json
    if [[ -f $tuning && $tuning -nt $exp_dir/$run/final.pt && $tuning -nt $lm ]]; then
      echo "stage 4: $exp_dir/$run/decode_lm_* are up to date"
    else
      echo "stage 4: LM weight tuned on dev, LM decoding of ${test_sets[*]} with $run"
      "$PYTHON" local/lm_decode.py --model "$exp_dir/$run/final.pt" --lm "$lm" \
        --data-dir "$data_dir" --out-dir "$exp_dir/$run" --test-sets "${test_sets[*]}" \
        --device "$device" > /dev/null
    fi
    [[ $wfst == true ]] || continue
    tuning=$exp_dir/$run/wfst_tuning.json
    if [[ -f $tuning && $tuning -nt $exp_dir/$run/final.pt && $tuning -nt $lm ]]; then
      echo "stage 4: $exp_dir/$run/decode_wfst_* are up to date"
    else
      echo "stage 4: TLG graph, acoustic scale tuned on dev, WFST decoding with $run"
      "$PYTHON" local/wfst_decode.py --model "$exp_dir/$run/final.pt" --lm "$lm" \
        --lang "$lang" --graph "$graph" --data-dir "$data_dir" --out-dir "$exp_dir/$run" \
        --test-sets "${test_sets[*]}" --device "$device" \
        ${wfst_grid[@]+"${wfst_grid[@]}"} > /dev/null
    fi
  done
fi

if (( stage <= 5 && 5 <= stop_stage )); then
  for run in "${runs[@]}"; do
    for t in "${test_sets[@]}"; do
      for d in "${decodings[@]}"; do stage_needs 5 4 "$exp_dir/$run/${d}_$t/text"; done
    done
  done
  echo "stage 5: scoring"
  for run in "${runs[@]}"; do
    for t in "${test_sets[@]}"; do
      for d in "${decodings[@]}"; do
        "$PYTHON" local/score_sclite.py "$data_dir/$t" "$exp_dir/$run/${d}_$t"
      done
    done
  done
fi

if (( stage <= 6 && 6 <= stop_stage )); then
  for enc in "${encoder_list[@]}"; do stage_needs 6 3 "$exp_dir/$enc/final.pt"; done
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

# EXP/RESULTS.md; stage 9 writes it again with the hybrid head's section (GMM aligner).
report() {
  "$PYTHON" local/make_report.py --data-dir "$data_dir" --exp-dir "$exp_dir" \
    --encoders "${encoder_list[*]}" --baseline "$baseline" --candidate "$candidate" \
    --test-sets "${test_sets[*]}" --device "$device" --seeds "$seeds" \
    --decodings "${decodings[*]}" \
    --train-set "$train_set" --train-jobs "$train_jobs" "$@"
}

if (( stage <= 7 && 7 <= stop_stage )); then
  echo "stage 7: report"
  report
fi

# One hybrid training of stage 8 in DIR = EXP/<hybrid prefix><encoder>.
hybrid_run() {
  local hexp=$1 enc=${1##*/"$hybrid_prefix"}
  echo "stage 8: training $enc with the hybrid head ($hybrid_config) in $hexp"
  local init=()
  if [[ $hybrid_init == true && -f $exp_dir/$enc/final.pt ]]; then
    init=(--set "training.init_encoder=$exp_dir/$enc/final.pt")
    echo "stage 8: $enc starts from the encoder of $exp_dir/$enc/final.pt"
  fi
  OMP_NUM_THREADS=$train_threads blspeech train --config "$hybrid_config" \
    --set "model.name=$enc" ${hybrid_overrides[@]+"${hybrid_overrides[@]}"} \
    ${init[@]+"${init[@]}"} \
    ${train_overrides[@]+"${train_overrides[@]}"} \
    --train-dir "$data_dir/train" --dev-dir "$data_dir/dev" --tokenizer-dir "$lang" \
    --train-ali "scp:$(ali_scp train)" --dev-ali "scp:$(ali_scp dev)" \
    --exp-dir "$hexp" --device "$device" > "$hexp/.summary.json.tmp"
  mv "$hexp/.summary.json.tmp" "$hexp/train_summary.json"
  "$PYTHON" ../utils/select_final.py "$hexp" dev_loss
}

if (( stage <= 8 && 8 <= stop_stage )); then
  hybrid_overrides=()
  if [[ $aligner == gmm ]]; then
    stage_needs 8 1 "$data_dir/train/feats.scp"
    if [[ -f $ali_root/info.json && $ali_root/info.json -nt $data_dir/train/feats.scp ]]; then
      echo "stage 8: $ali_root is up to date"
    else
      echo "stage 8: monophone GMM-HMM trained on train, aligning every split (in $ali_root)"
      align_dirs=()
      for split in dev "${test_sets[@]}"; do align_dirs+=(--align-dir "$data_dir/$split"); done
      blspeech align-gmm "$data_dir/train" "$ali_root" "${align_dirs[@]}" --nj "$nj" \
        --no-progress > /dev/null
    fi
    hybrid_overrides=(--set "head.num_pdfs=$(cat "$ali_root/num_pdfs")")
  else
    [[ -f $ali_root/final.pt ]] \
      || die "stage 8 aligns with $ali_root/final.pt, which does not exist: train \
the --aligner ($aligner) in stage 3 first"
    for split in "${splits[@]}"; do
      ali=$ali_root/ali_$split
      if [[ -f $ali/topology && $ali/topology -nt $ali_root/final.pt ]]; then
        echo "stage 8: $ali is up to date"
        continue
      fi
      echo "stage 8: aligning $split with $aligner (token-topology targets in $ali)"
      blspeech align "$ali_root/final.pt" "$data_dir/$split" "$ali" --hybrid-targets \
        --device "$device" --no-progress > /dev/null
    done
  fi
  in_parallel 8 hybrid_run "hybrid training" "${hybrid_list[@]/#/$exp_dir/$hybrid_prefix}"
fi

# Stage 9 for one hybrid model in DIR = EXP/<hybrid prefix><encoder>: tuning on dev,
# decoding, frame accuracy and sclite (the models are decoded at the same time).
hybrid_decode_run() {
  local hexp=$1
  if [[ -f $hexp/hybrid_summary.json && $hexp/hybrid_summary.json -nt $hexp/final.pt ]]; then
    echo "stage 9: $hexp/hybrid_summary.json is up to date"
    return
  elif [[ $aligner == gmm ]]; then
    echo "stage 9: tuning on dev, WFST and lexicon decoding, frame accuracy of $hexp"
    OMP_NUM_THREADS=$train_threads "$PYTHON" local/hybrid_gmm_decode.py \
      --model "$hexp/final.pt" --data-dir "$data_dir" --gmm-dir "$ali_root" --lm "$lm" \
      --test-sets "${test_sets[*]}" --device "$device"
  else
    echo "stage 9: tuning on dev, decoding and frame accuracy of $hexp/final.pt"
    OMP_NUM_THREADS=$train_threads "$PYTHON" local/hybrid_decode.py --model "$hexp/final.pt" \
      --data-dir "$data_dir" --ali-dir "$ali_root" --test-sets "${test_sets[*]}" \
      --device "$device"
  fi
  for t in "${test_sets[@]}"; do
    "$PYTHON" local/score_sclite.py "$data_dir/$t" "$hexp/decode_$t"
  done
  # A bundle holds a token-loop search's settings; an HLG search needs its graph dir.
  [[ $aligner == gmm ]] && return
  read -r prior_scale penalty < <("$PYTHON" -c 'import json, sys
d = json.load(open(sys.argv[1])); print(d["prior_scale"], d["insertion_penalty"])' \
    "$hexp/hybrid_summary.json")
  blspeech make-bundle "$hexp/final.pt" "$hexp/final.bundle" --prior-scale "$prior_scale" \
    --insertion-penalty "$penalty" > /dev/null
}

if (( stage <= 9 && 9 <= stop_stage )); then
  for enc in "${hybrid_list[@]}"; do stage_needs 9 8 "$exp_dir/$hybrid_prefix$enc/final.pt"; done
  if [[ $aligner == gmm ]]; then
    echo "stage 9: HLG graph of the GMM's HMMs, lexicon and LM in $ali_root/graph"
    "$PYTHON" local/hybrid_gmm_decode.py --graph-only --data-dir "$data_dir" \
      --gmm-dir "$ali_root" --lm "$lm"
  fi
  in_parallel 9 hybrid_decode_run "hybrid decoding" \
    "${hybrid_list[@]/#/$exp_dir/$hybrid_prefix}"
  echo "stage 9: report"
  "$PYTHON" local/hybrid_report.py --exp-dir "$exp_dir" --encoders "${hybrid_list[*]}" \
    --ctc-encoders "${encoder_list[*]}" --aligner "$aligner" --test-sets "${test_sets[*]}" \
    --prefix "$hybrid_prefix"
  if [[ $aligner == gmm ]]; then
    echo "stage 9: $exp_dir/RESULTS.md with the hybrid head's section"
    report --hybrid-prefix "$hybrid_prefix" > /dev/null
  fi
fi
