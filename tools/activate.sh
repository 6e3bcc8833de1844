# shellcheck shell=bash
# Source me: sets up the environment if needed and puts it first on PATH.
#   . tools/activate.sh
_eee_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_eee_venv="$(bash "$_eee_root/tools/setup.sh")" || return 1 2>/dev/null || exit 1
export PATH="$_eee_venv/bin:$PATH"
export PYTHONPATH="$_eee_root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 1)}"
unset _eee_venv
