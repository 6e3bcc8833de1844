# shellcheck shell=bash
# Sourced by every recipe's run.sh: puts the project's Python environment on PATH.
#   default:        . tools/activate.sh (creates the cached virtual environment the first time)
#   EEE_NO_SETUP=1: use the python already on PATH; only this checkout goes on PYTHONPATH
_eee_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
if [ "${EEE_NO_SETUP:-}" = 1 ]; then
    export PYTHONPATH="${_eee_root}${PYTHONPATH:+:${PYTHONPATH}}"
else
    # shellcheck source-path=SCRIPTDIR/../../..
    . "${_eee_root}/tools/activate.sh"
fi
unset _eee_root
