#!/usr/bin/env bash
# Switchboard (300 h) with Hub5'00 evaluation: the baseline ResNet and the bL-ResNet
# acoustic models with a CTC head, and (with a Kaldi GMM system) with the HMM-hybrid head.
#
# Usage: recipes/swbd/run.sh --swbd-dir DIR --ms98-dir DIR --eval2000-audio-dir DIR \
#            --eval2000-transcript-dir DIR [options]
#
# Corpora (LDC), as Kaldi's egs/swbd/s5c uses them:
#   --swbd-dir                 Switchboard-1 Release 2, LDC97S62 (swb1_d1/data/sw02001.sph ...)
#   --ms98-dir                 MS-State word transcripts (swb_ms98_transcriptions/)
#   --eval2000-audio-dir       Hub5'00 audio, LDC2002S09 (hub5e_00/english/*.sph)
#   --eval2000-transcript-dir  Hub5'00 references, LDC2002T43 (2000_hub5_eng_eval_tr/,
#                              with reference/*.stm and *.glm)
# LDC ships the audio shorten-compressed; sph2pipe (on PATH or under KALDI_ROOT) decodes it
# in wav.scp pipes. Without it, stage 0 stops naming the first such file.
#
# Stages:
#   0  data prep: DATA/train_all (both channels of every conversation, ms98 transcripts
#      normalized like Kaldi's swbd1_map_words.pl) and DATA/eval2000 (segments and text
#      from the stm; the stm and glm copied for scoring)
#   1  splits: DATA/train_dev (the first --dev-utts utterances, as Kaldi's train_dev) and
#      DATA/train (the rest); with --speed-perturb, DATA/train_sp (0.9, 1.0, 1.1)
#   2  features: 40-bin log-mel filterbanks at 8 kHz, global CMVN of the training dir
#   3  tokenizer: BPE pieces of the training transcripts (DATA/lang_bpe<N>)
#   4  CTC training of every encoder of --encoders with --config (EXP/<encoder>/)
#   5  decoding of eval2000 and train_dev (greedy; text, ctm)
#   6  scoring: eval2000 against its stm with the GLM applied to references and
#      hypotheses, hesitations and fragments handled as Hub5 scoring does, all / swbd /
#      callhm separately (EXP/<encoder>/decode_eval2000/score_hub5/), NIST sclite
#      (csrfilt.sh + sclite) as a cross-check where installed; train_dev against its text
#   7  report: EXP/RESULTS.md (our numbers beside the published reference) + results.json
#   8  hybrid training: a GMM system's alignments as frame targets of each encoder of
#      --hybrid-encoders with --hybrid-config (EXP/hybrid_<encoder>/). With KALDI_ROOT
#      set: a Kaldi system's (--gmm-ali-dir, e.g. exp/tri4_ali_nodup of Kaldi's s5c;
#      ali-to-pdf). Without Kaldi: a monophone GMM-HMM from the kaldi-hmm-gmm wheel
#      ('blspeech align-gmm', the gmm extra) trained on --gmm-utts utterances of train
#      and aligning train and train_dev (EXP/gmm/); much slower and weaker than Kaldi's
#      tri4 with fMLLR: monophones (the wheel cannot tie triphone states), no speaker
#      adaptation, a numpy Viterbi
#   9  hybrid decoding of eval2000, scored as in stage 6. With KALDI_ROOT set:
#      blspeech forward | latgen-faster-mapped on --gmm-graph-dir (e.g.
#      exp/tri4/graph_sw1_tg), best path to a CTM. Without Kaldi: a word 3-gram LM of the
#      training transcripts (DATA/lm/3gram.arpa), an HLG graph of the GMM's HMMs, its
#      lexicon and that LM (EXP/gmm/graph_3gram, kaldifst), 'blspeech decode --method
#      wfst' with --acoustic-scale and --prior-scale
#
# Options (default in brackets):
#   --stage N / --stop-stage N   first / last stage [0 / 7; 8-9 on request]
#   --device DEV          cpu or cuda for training and decoding [cuda]
#   --nj N                parallel jobs for features [8]
#   --encoders "A B"      encoders with the CTC head [resnet_am_swbd bl_resnet_am_swbd]
#   --config YAML         CTC training recipe [conf/ctc.yaml]
#   --hybrid-encoders "A B"  encoders with the hybrid head [resnet_am_swbd bl_resnet_am_swbd]
#   --hybrid-config YAML  hybrid training recipe [conf/hybrid.yaml]
#   --vocab-size N        BPE vocabulary incl. <blank> and <unk>; 0: characters [2000]
#   --dev-utts N          utterances held out as train_dev [4000]
#   --speed-perturb true|false   3-way speed perturbation of the training data [true]
#   --epochs N            override training.epochs []
#   --train-args "ARGS"   more 'blspeech train' flags []
#   --data-dir DIR / --exp-dir DIR   [data / exp]
#   --gmm-ali-dir DIR     Kaldi alignment dir of the training data (ali.*.gz, final.mdl,
#                         tree) for stage 8 []
#   --gmm-dev-ali-dir DIR  the same for train_dev (steps/align_fmllr.sh data/train_dev ...)
#                         [--gmm-ali-dir, when it covers train_dev too]
#   --gmm-graph-dir DIR   Kaldi decoding graph dir (HCLG.fst, words.txt) for stage 9 []
#   --acoustic-scale S    acoustic scale of the stage 9 search [0.1]
#   --prior-scale S       without Kaldi: weight of the log priors subtracted from the
#                         log posteriors in stage 9 [1.0]
#   --gmm-utts N          without Kaldi: utterances of train the GMM-HMM trains on (as
#                         s5c's monophones use 10k); 0: all [10000]
#
# Kaldi's alignments are per 10 ms frame, so conf/hybrid.yaml sets time_subsampling 1 for
# the hybrid encoders; the features must have the same frame count as the GMM system's
# (25 ms windows, 10 ms shift, snip-edges, as here). wav.scp entries ending in '|' are
# shell commands (sph2pipe, sox): they are executed, as in Kaldi.

set -euo pipefail

stage=0
stop_stage=7
device=cuda
nj=8
swbd_dir=
ms98_dir=
eval2000_audio_dir=
eval2000_transcript_dir=
encoders="resnet_am_swbd bl_resnet_am_swbd"
config=conf/ctc.yaml
hybrid_encoders="resnet_am_swbd bl_resnet_am_swbd"
hybrid_config=conf/hybrid.yaml
vocab_size=2000
dev_utts=4000
speed_perturb=true
epochs=
train_args=
data_dir=data
exp_dir=exp
gmm_ali_dir=
gmm_dev_ali_dir=
gmm_graph_dir=
acoustic_scale=0.1
prior_scale=1.0
gmm_utts=10000

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

# Corpus paths are resolved before changing into the recipe folder.
abs() { [[ -z $1 ]] || (cd "$1" 2> /dev/null && pwd) || die "directory $1 does not exist"; }
swbd_dir=$(abs "$swbd_dir")
ms98_dir=$(abs "$ms98_dir")
eval2000_audio_dir=$(abs "$eval2000_audio_dir")
eval2000_transcript_dir=$(abs "$eval2000_transcript_dir")
gmm_ali_dir=$(abs "$gmm_ali_dir")
gmm_dev_ali_dir=$(abs "${gmm_dev_ali_dir:-$gmm_ali_dir}")
gmm_graph_dir=$(abs "$gmm_graph_dir")

cd "$recipe_dir"
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" > /dev/null || die "python interpreter '$PYTHON' not found; set PYTHON"
"$PYTHON" -c 'import blspeech' 2> /dev/null \
  || die "$PYTHON cannot import blspeech; run 'make setup' and set PYTHON=.venv/bin/python"
blspeech() { "$PYTHON" -m blspeech "$@"; }

read -r -a encoder_list <<< "$encoders"
read -r -a hybrid_list <<< "$hybrid_encoders"
read -r -a extra_train <<< "$train_args"
[[ -f $config ]] || die "--config $config does not exist"
[[ -f $hybrid_config ]] || die "--hybrid-config $hybrid_config does not exist"
if [[ $vocab_size == 0 ]]; then
  lang=$data_dir/lang_char
  tokenizer_args=(--kind char)
else
  lang=$data_dir/lang_bpe$vocab_size
  tokenizer_args=(--kind bpe --vocab-size "$vocab_size")
fi
train=$data_dir/train
[[ $speed_perturb == true ]] && train=$data_dir/train_sp
train_overrides=()
[[ -n $epochs ]] && train_overrides+=(--set "training.epochs=$epochs")
train_overrides+=(${extra_train[@]+"${extra_train[@]}"})

kaldi_bin() {  # the path of a Kaldi binary, or a clear error
  [[ -n ${KALDI_ROOT:-} ]] || die "stages 8-9 use a Kaldi GMM system and Kaldi binaries: \
set KALDI_ROOT to a compiled Kaldi (https://github.com/kaldi-asr/kaldi, tools/ and src/ \
built); the CTC stages 0-7 need no Kaldi"
  local b
  for b in "$KALDI_ROOT"/src/*bin/"$1"; do
    [[ -x $b ]] && { echo "$b"; return; }
  done
  die "$1 not found under \$KALDI_ROOT/src/*bin ($KALDI_ROOT); build Kaldi's src/ first"
}

if (( stage <= 0 && 0 <= stop_stage )); then
  [[ -n $swbd_dir && -n $ms98_dir ]] || die "stage 0 needs --swbd-dir (LDC97S62) and \
--ms98-dir (swb_ms98_transcriptions)"
  [[ -n $eval2000_audio_dir && -n $eval2000_transcript_dir ]] || die "stage 0 needs \
--eval2000-audio-dir (LDC2002S09) and --eval2000-transcript-dir (LDC2002T43)"
  echo "stage 0: data prep in $data_dir/train_all and $data_dir/eval2000"
  "$PYTHON" -m blspeech.corpora.swbd_cli train --swbd-dir "$swbd_dir" \
    --ms98-dir "$ms98_dir" --out "$data_dir/train_all"
  "$PYTHON" -m blspeech.corpora.swbd_cli eval2000 --audio-dir "$eval2000_audio_dir" \
    --transcript-dir "$eval2000_transcript_dir" --out "$data_dir/eval2000"
fi

if (( stage <= 1 && 1 <= stop_stage )); then
  stage_needs 1 0 "$data_dir/train_all/text"
  echo "stage 1: train_dev (first $dev_utts utterances) and train"
  total=$(wc -l < "$data_dir/train_all/text")
  (( total > dev_utts )) || die "--dev-utts $dev_utts leaves no training data ($total \
utterances in $data_dir/train_all)"
  blspeech subset-data-dir "$data_dir/train_all" "$data_dir/train_dev" --first "$dev_utts"
  blspeech subset-data-dir "$data_dir/train_all" "$data_dir/train" \
    --last $(( total - dev_utts ))
  if [[ $speed_perturb == true ]]; then
    blspeech perturb-speed "$data_dir/train" "$data_dir/train_sp" --factors 0.9,1.0,1.1
  fi
fi

if (( stage <= 2 && 2 <= stop_stage )); then
  stage_needs 2 1 "$train/wav.scp" "$data_dir/train_dev/wav.scp"
  stage_needs 2 0 "$data_dir/eval2000/wav.scp"
  echo "stage 2: 40-bin log-mel features at 8 kHz and global CMVN"
  for d in "$train" "$data_dir/train_dev" "$data_dir/eval2000"; do
    blspeech compute-feats "$d" --nj "$nj" --sample-rate 8000 --num-mel-bins 40 \
      --no-progress > /dev/null
  done
  blspeech compute-cmvn "$train" > /dev/null
  for d in "$train" "$data_dir/train_dev" "$data_dir/eval2000"; do
    blspeech validate-data-dir "$d" > /dev/null
  done
fi

if (( stage <= 3 && 3 <= stop_stage )); then
  stage_needs 3 1 "$data_dir/train/text"
  echo "stage 3: tokenizer in $lang"
  if [[ ! -f $lang/tokenizer.pt ]]; then
    blspeech train-tokenizer "$data_dir/train" "$lang" "${tokenizer_args[@]}" --case lower \
      > /dev/null
  fi
fi

if (( stage <= 4 && 4 <= stop_stage )); then
  stage_needs 4 2 "$train/feats.scp" "$data_dir/train_dev/feats.scp"
  stage_needs 4 3 "$lang/tokenizer.pt"
  for enc in "${encoder_list[@]}"; do
    echo "stage 4: training $enc in $exp_dir/$enc"
    mkdir -p "$exp_dir/$enc"
    blspeech train --config "$config" --set "model.name=$enc" \
      ${train_overrides[@]+"${train_overrides[@]}"} \
      --train-dir "$train" --dev-dir "$data_dir/train_dev" --tokenizer-dir "$lang" \
      --exp-dir "$exp_dir/$enc" --device "$device" > "$exp_dir/$enc/.summary.json.tmp"
    mv "$exp_dir/$enc/.summary.json.tmp" "$exp_dir/$enc/train_summary.json"
    "$PYTHON" ../utils/select_final.py "$exp_dir/$enc"
  done
fi

if (( stage <= 5 && 5 <= stop_stage )); then
  for enc in "${encoder_list[@]}"; do stage_needs 5 4 "$exp_dir/$enc/final.pt"; done
  for enc in "${encoder_list[@]}"; do
    for t in eval2000 train_dev; do
      out=$exp_dir/$enc/decode_$t
      if [[ -f $out/ctm && $out/ctm -nt $exp_dir/$enc/final.pt ]]; then
        echo "stage 5: $out is up to date"
        continue
      fi
      echo "stage 5: decoding $t with $enc"
      blspeech decode "$exp_dir/$enc/final.pt" "$data_dir/$t" "$out" --device "$device" \
        --no-progress > /dev/null
    done
  done
fi

if (( stage <= 6 && 6 <= stop_stage )); then
  echo "stage 6: scoring"
  for enc in "${encoder_list[@]}"; do
    "$PYTHON" local/score_eval2000.py "$data_dir/eval2000" "$exp_dir/$enc/decode_eval2000"
  done
fi

if (( stage <= 7 && 7 <= stop_stage )); then
  echo "stage 7: report"
  "$PYTHON" local/make_report.py --exp-dir "$exp_dir" --encoders "${encoder_list[*]}" \
    --hybrid-encoders "${hybrid_list[*]}"
fi

# Without Kaldi, stages 8-9 use the wheels: GMM-HMM alignments and an HLG graph.
gmm=$exp_dir/gmm
if [[ -n $gmm_utts && $gmm_utts != 0 ]]; then gmm_train_ali=$gmm/ali_train/pdf.scp
else gmm_train_ali=$gmm/pdf.scp; fi
lm=$data_dir/lm/3gram.arpa
# The hybrid head trains on train itself (a GMM aligned it, not its perturbed copies):
# its features and CMVN, unless stage 2 made them already.
hybrid_train_feats() {
  blspeech compute-feats "$data_dir/train" --nj "$nj" --sample-rate 8000 --num-mel-bins 40 \
    --no-progress > /dev/null
  blspeech compute-cmvn "$data_dir/train" > /dev/null
}

if (( stage <= 8 && 8 <= stop_stage )); then
  if [[ -z ${KALDI_ROOT:-} ]]; then
    stage_needs 8 2 "$data_dir/train_dev/feats.scp"
    if [[ -f $gmm/info.json ]]; then
      echo "stage 8: $gmm is up to date"
    else
      gmm_data=$data_dir/train
      align_dirs=(--align-dir "$data_dir/train_dev")
      if [[ $gmm_train_ali != "$gmm/pdf.scp" ]]; then
        gmm_data=$data_dir/train_gmm$gmm_utts
        blspeech subset-data-dir "$data_dir/train" "$gmm_data" --random "$gmm_utts" \
          > /dev/null
        align_dirs+=(--align-dir "$data_dir/train")
      fi
      echo "stage 8: no KALDI_ROOT: monophone GMM-HMM of $gmm_data from the \
kaldi-hmm-gmm wheel, aligning train and train_dev (in $gmm)"
      blspeech align-gmm "$gmm_data" "$gmm" "${align_dirs[@]}" --nj "$nj" --no-progress \
        > /dev/null
    fi
    num_pdfs=$(cat "$gmm/num_pdfs")
    ali="scp:$gmm_train_ali"
    dev_ali="scp:$gmm/ali_train_dev/pdf.scp"
  else
    ali_to_pdf=$(kaldi_bin ali-to-pdf)
    tree_info=$(kaldi_bin tree-info)
    [[ -n $gmm_ali_dir ]] || die "stage 8 needs --gmm-ali-dir: a Kaldi alignment dir of \
$data_dir/train (ali.*.gz, final.mdl, tree), e.g. exp/tri4_ali_nodup of egs/swbd/s5c"
    for f in final.mdl tree; do
      [[ -f $gmm_ali_dir/$f ]] || die "$gmm_ali_dir/$f not found: not a Kaldi alignment dir"
    done
    compgen -G "$gmm_ali_dir/ali.*.gz" > /dev/null \
      || die "no $gmm_ali_dir/ali.*.gz: not a Kaldi alignment dir"
    num_pdfs=$("$tree_info" "$gmm_ali_dir/tree" | awk '$1 == "num-pdfs" {print $2}')
    # The GMM system aligned the unperturbed data (no speed perturbation here).
    ali="ark:gunzip -c $gmm_ali_dir/ali.*.gz | $ali_to_pdf $gmm_ali_dir/final.mdl ark:- ark:- |"
    dev_ali="ark:gunzip -c $gmm_dev_ali_dir/ali.*.gz | $ali_to_pdf \
$gmm_dev_ali_dir/final.mdl ark:- ark:- |"
  fi
  hybrid_train_feats
  for enc in "${hybrid_list[@]}"; do
    hexp=$exp_dir/hybrid_$enc
    echo "stage 8: training $enc with the hybrid head ($num_pdfs pdfs) in $hexp"
    mkdir -p "$hexp"
    blspeech train --config "$hybrid_config" --set "model.name=$enc" \
      --set "head.num_pdfs=$num_pdfs" ${train_overrides[@]+"${train_overrides[@]}"} \
      --train-dir "$data_dir/train" --dev-dir "$data_dir/train_dev" \
      --train-ali "$ali" --dev-ali "$dev_ali" \
      --exp-dir "$hexp" --device "$device" > "$hexp/.summary.json.tmp"
    mv "$hexp/.summary.json.tmp" "$hexp/train_summary.json"
    "$PYTHON" ../utils/select_final.py "$hexp" dev_loss
  done
fi

if (( stage <= 9 && 9 <= stop_stage )) && [[ -z ${KALDI_ROOT:-} ]]; then
  for enc in "${hybrid_list[@]}"; do stage_needs 9 8 "$exp_dir/hybrid_$enc/final.pt"; done
  if [[ ! -f $lm ]]; then
    echo "stage 9: word 3-gram LM of the training transcripts in $lm"
    mkdir -p "$(dirname "$lm")"
    blspeech train-lm "$data_dir/train" "$lm" --order 3 > /dev/null
  fi
  graph=$gmm/graph_3gram
  if [[ ! -f $graph/HLG.fst || $graph/HLG.fst -ot $lm ]]; then
    echo "stage 9: HLG graph of $gmm/lang and $lm in $graph"
    blspeech mkgraph "$gmm/lang" "$lm" "$graph" > /dev/null
  fi
  for enc in "${hybrid_list[@]}"; do
    hexp=$exp_dir/hybrid_$enc
    out=$hexp/decode_eval2000
    echo "stage 9: decoding eval2000 with $hexp/final.pt and $graph (WFST)"
    blspeech decode "$hexp/final.pt" "$data_dir/eval2000" "$out" --method wfst \
      --graph "$graph" --acoustic-scale "$acoustic_scale" --prior-scale "$prior_scale" \
      --device "$device" --no-progress > /dev/null
    "$PYTHON" local/score_eval2000.py "$data_dir/eval2000" "$out"
  done
elif (( stage <= 9 && 9 <= stop_stage )); then
  latgen=$(kaldi_bin latgen-faster-mapped)
  lattice_1best=$(kaldi_bin lattice-1best)
  nbest_to_ctm=$(kaldi_bin nbest-to-ctm)
  int2sym=$KALDI_ROOT/egs/wsj/s5/utils/int2sym.pl
  [[ -n $gmm_graph_dir && -f $gmm_graph_dir/HCLG.fst ]] || die "stage 9 needs \
--gmm-graph-dir with HCLG.fst and words.txt (e.g. exp/tri4/graph_sw1_tg)"
  [[ -n $gmm_ali_dir ]] || die "stage 9 needs --gmm-ali-dir (its final.mdl)"
  for enc in "${hybrid_list[@]}"; do
    hexp=$exp_dir/hybrid_$enc
    out=$hexp/decode_eval2000
    mkdir -p "$out"
    echo "stage 9: decoding eval2000 with $hexp/final.pt and $gmm_graph_dir/HCLG.fst"
    blspeech forward "$hexp/final.pt" "$data_dir/eval2000" ark:- --device "$device" \
      --no-progress \
      | "$latgen" --acoustic-scale="$acoustic_scale" --allow-partial=true \
          --word-symbol-table="$gmm_graph_dir/words.txt" "$gmm_ali_dir/final.mdl" \
          "$gmm_graph_dir/HCLG.fst" ark:- "ark:|gzip -c > $out/lat.1.gz"
    # Utterance-level CTM in blspeech's form (utt 1 start dur word), then scored as stage 6.
    "$lattice_1best" --acoustic-scale="$acoustic_scale" "ark:gunzip -c $out/lat.1.gz|" ark:- \
      | "$nbest_to_ctm" ark:- - \
      | "$int2sym" -f 5 "$gmm_graph_dir/words.txt" > "$out/ctm.tmp"
    mv "$out/ctm.tmp" "$out/ctm"
    "$PYTHON" local/score_eval2000.py "$data_dir/eval2000" "$out"
  done
fi
