# Kaldi-style option parsing for recipe scripts. Source it after setting defaults:
#
#   stage=0          # every option needs a default, set before sourcing
#   data_dir=
#   . recipes/utils/parse_options.sh
#
# Then `--data-dir /x` (or `--data-dir=/x`) sets data_dir=/x: dashes in the option name
# become underscores. An option whose default is true/false only accepts true/false.
# `--help` / `-h` prints the calling script's header comment (the comment block after the
# shebang line) and exits 0. Unknown options and a missing value exit 2.
# Parsing stops at `--` or at the first argument that is not an option; what is left
# stays in "$@" for the calling script.

_po_usage() {
  local line first=1
  while IFS= read -r line || [[ -n $line ]]; do
    if (( first )); then
      first=0
      [[ $line == '#!'* ]] && continue
    fi
    [[ $line == '#'* ]] || break
    line=${line#\#}
    printf '%s\n' "${line# }"
  done < "$0"
}

while (( $# > 0 )); do
  case $1 in
    --help|-h)
      _po_usage
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --?*)
      _po_opt=${1#--}
      if [[ $_po_opt == *=* ]]; then
        _po_value=${_po_opt#*=}
        _po_opt=${_po_opt%%=*}
        shift
      else
        if (( $# < 2 )); then
          echo "$0: option --$_po_opt needs a value" >&2
          exit 2
        fi
        _po_value=$2
        shift 2
      fi
      _po_name=${_po_opt//-/_}
      # Only names with a default are options; this also rejects typos.
      if [[ ! $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [[ -z ${!_po_name+set} ]]; then
        echo "$0: unknown option --$_po_opt (see $0 --help)" >&2
        exit 2
      fi
      case ${!_po_name} in
        true|false)
          if [[ $_po_value != true && $_po_value != false ]]; then
            echo "$0: option --$_po_opt takes true or false, got '$_po_value'" >&2
            exit 2
          fi
          ;;
      esac
      printf -v "$_po_name" '%s' "$_po_value"
      ;;
    *)
      break
      ;;
  esac
done
unset _po_opt _po_value _po_name
