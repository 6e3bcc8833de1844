# shellcheck shell=bash
# Helpers for the corpus recipes (egs2/<corpus>/asr1/run.sh); source it.

# recipe_option NAME DEFAULT ARGS... -> the value of --NAME (or --NAME=VALUE) in ARGS, the last
# one given, or DEFAULT. The recipe still passes ARGS on to the driver unchanged.
recipe_option() {
    local name=$1 value=$2 prev=
    shift 2
    for a in "$@"; do
        case "${a}" in
            "--${name}="*) value=${a#*=} ;;
            *) [ "${prev}" = "--${name}" ] && value=${a} ;;
        esac
        prev=${a}
    done
    echo "${value}"
}

# stage1_pending WORKDIR STAGE STOP_STAGE SET... -> success when stage 1 is in the range and
# one of the sets has not been prepared yet (no WORKDIR/data/<set>/.done)
stage1_pending() {
    local workdir=$1 stage=$2 stop_stage=$3 dset
    shift 3
    [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] || return 1
    for dset in "$@"; do
        [ -f "${workdir}/data/${dset}/.done" ] || return 0
    done
    return 1
}

# require_corpus VARIABLE VALUE SUBDIR LAYOUT -> stops with a message naming the variable, the
# path and the expected layout unless VALUE/SUBDIR is a directory
require_corpus() {
    local variable=$1 value=$2 subdir=$3 layout=$4
    if [ -z "${value}" ]; then
        echo "ERROR: \$${variable} is not set. Set it to the folder holding ${subdir}/, e.g." >&2
        echo "         ${variable}=/data/corpora $0" >&2
        echo "       Expected layout: ${layout}" >&2
        exit 1
    fi
    if [ ! -d "${value}/${subdir}" ]; then
        echo "ERROR: \$${variable}=${value}: ${value}/${subdir} does not exist." >&2
        echo "       \$${variable} must be the folder holding ${subdir}/. Expected layout: ${layout}" >&2
        exit 1
    fi
}

# absolute PATH -> PATH made absolute against the current directory
absolute() {
    case "$1" in
        /*) echo "$1" ;;
        *) echo "${PWD}/$1" ;;
    esac
}

# recipe_corpus VARIABLE VALUE SUBDIR LAYOUT DOWNLOAD WORKDIR "SET ..." ARGS... -> the corpus
# folder, absolute (empty when none is given and none is needed). DOWNLOAD true: VALUE, or
# <workdir>/downloads when VALUE is empty (the corpus module downloads into it). Otherwise, when
# stage 1 will run for one of the SETs (stage1_pending; ARGS are the driver's options, read for
# --workdir (default WORKDIR), --stage and --stop_stage), VALUE/SUBDIR must exist
# (require_corpus). Use as corpus=$(recipe_corpus ...): a missing corpus stops the recipe.
recipe_corpus() {
    local variable=$1 value=$2 subdir=$3 layout=$4 download=$5 workdir=$6 set_list
    read -r -a set_list <<<"$7"
    shift 7
    workdir=$(recipe_option workdir "${workdir}" "$@")
    if [ "${download}" = true ]; then
        value=${value:-${workdir}/downloads}
    elif stage1_pending "${workdir}" "$(recipe_option stage 1 "$@")" "$(recipe_option stop_stage 15 "$@")" \
            "${set_list[@]}"; then
        require_corpus "${variable}" "${value}" "${subdir}" "${layout}"
    fi
    [ -z "${value}" ] || absolute "${value}"
}
