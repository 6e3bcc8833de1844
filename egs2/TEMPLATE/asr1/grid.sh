#!/usr/bin/env bash
# Run a recipe's experiment grid (conf/grid/<recipe>.yaml) and write the comparison table
# <workdir>/exp/grid_<name>/GRID.md (rows = models, columns = exits; exit-policy trade-off).
#
#   egs2/TEMPLATE/asr1/grid.sh conf/grid/mini_an4.yaml --workdir /tmp/grid      # CPU, minutes
#   egs2/TEMPLATE/asr1/grid.sh conf/grid/librispeech_100.yaml --ngpu 4          # see docs/grid.md
#
# Paths in the grid file are relative to the repository root (--root DIR to change that).
# Grid options: --only NAME,NAME (a subset of the experiments), --jobs N (experiments at the
# same time; a fine-tuned one waits for its source), --table_only (rewrite GRID.md
# from finished experiments), --dry_run (print the recipe calls). Every other option goes to the
# recipe and from there to asr.sh (--workdir, --ngpu, --nj, --inference_nj, ...).
# Finished stages are skipped on a rerun, as in asr.sh.
set -euo pipefail
driver_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${driver_dir}/../../.." && pwd)"
# shellcheck source-path=SCRIPTDIR
. "${driver_dir}/path.sh"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
exec python3 -m espnet_early_exit.bin.run_grid --root "${root}" "$@"
