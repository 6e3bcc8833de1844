#!/usr/bin/env bash
# The default recipe, egs2/mini_an4/asr1/run.sh (a tiny early-exit Conformer trained and decoded
# at every exit on mini_an4, on the CPU in a few minutes), with its outputs next to this file.
#
#   ./run.sh                              everything (sets up the Python environment the first time)
#   ./run.sh --stage 12 --stop_stage 13   any option of the driver: egs2/TEMPLATE/asr1/asr.sh --help
#   EEE_NO_SETUP=1 ./run.sh               use the python on PATH instead of tools/setup.sh's environment
#
# Outputs go to data/ dump/ exp/ downloads/ next to this file (--workdir DIR to put them elsewhere).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${root}/egs2/mini_an4/asr1/run.sh" --workdir "${root}" "$@"
