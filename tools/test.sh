#!/usr/bin/env bash
# Set up (if needed) and run the test suite: bash tools/test.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
. tools/activate.sh
exec python -m pytest "$@"
