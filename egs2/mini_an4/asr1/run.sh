#!/usr/bin/env bash
# mini_an4 (the default recipe, see ../../../run.sh), with its outputs in this directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${here}/../../../run.sh" --workdir "${here}" "$@"
