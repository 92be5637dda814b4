# stage_needs STAGE FROM PATH...: stop with exit code 2 unless every PATH exists. STAGE
# reads what stage FROM writes, so a run started at a later --stage says which stage to
# run first instead of failing inside a tool with a raw error. Source after the options.
#
#   . recipes/utils/stage_needs.sh
#   stage_needs 3 1 "$data_dir/train/feats.scp"   # "stage 3 needs ...; run --stage 1 first"

stage_needs() {
  local stage=$1 from=$2 path
  shift 2
  for path in "$@"; do
    if [[ ! -e $path ]]; then
      echo "$0: error: stage $stage needs $path; run --stage $from first" >&2
      exit 2
    fi
  done
}
