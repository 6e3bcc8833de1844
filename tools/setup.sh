#!/usr/bin/env bash
# Set up (once) the Python environment of espnet-early-exit and print its folder.
#
# The virtual environment lives outside the checkout, in
#   ${EEE_CACHE_DIR:-$HOME/.cache/espnet-early-exit}/venv-<hash of pyproject.toml's dependencies>
# so repeated runs (and other checkouts with the same pins) reuse it. The project itself is
# installed editable from this checkout on every call (seconds). Needs Python >=3.12,<3.14:
# $PYTHON if set, else python3.13/python3.12/python3 on PATH, else pyenv's interpreters.
# Debian tools used by the recipes (sctk's sclite, sox, flac), the test suite's shell linter
# (shellcheck) and a C compiler (gcc) are installed with apt-get when missing and apt-get is
# usable (skip with EEE_SKIP_APT=1). A small C kernel (exit policies' frame statistics) is
# compiled with it into the cache; without a compiler setup warns and decoding uses torch ops.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "[setup] $*" >&2; }

version_ok() {  # interpreter -> 0 if 3.12 <= version < 3.14
    "$1" -c 'import sys; sys.exit(0 if (3, 12) <= sys.version_info[:2] < (3, 14) else 1)' 2>/dev/null
}

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    for name in python3.12 python3.13 python3; do
        command -v "$name" >/dev/null 2>&1 && candidates+=("$(command -v "$name")")
    done
    local proot="${PYENV_ROOT:-$HOME/.pyenv}"
    command -v pyenv >/dev/null 2>&1 && proot="$(pyenv root)"
    for d in "$proot"/versions/3.12* "$proot"/versions/3.13*; do
        [ -x "$d/bin/python3" ] && candidates+=("$d/bin/python3")
    done
    for c in "${candidates[@]}"; do
        if version_ok "$c"; then echo "$c"; return 0; fi
    done
    return 1
}

# any Python >= 3.11 (tomllib) computes the cache key; the venv itself needs 3.12/3.13
keypy="$(find_python || command -v python3)"

# the cache key: the dependency pins (the [project] dependencies and extras of pyproject.toml)
key="$("$keypy" - "$root/pyproject.toml" <<'PYEOF'
import hashlib, sys, tomllib
proj = tomllib.load(open(sys.argv[1], "rb"))["project"]
pins = repr((proj["dependencies"], proj.get("optional-dependencies", {}), proj["requires-python"]))
print(hashlib.sha256(pins.encode()).hexdigest()[:12])
PYEOF
)"
cache="${EEE_CACHE_DIR:-$HOME/.cache/espnet-early-exit}"
venv="$cache/venv-$key"

mkdir -p "$cache"
# one set-up at a time per cache (two recipes or test runs started together must not build the
# same environment twice at once); the lock is released when this script exits
exec 9>"$cache/.setup.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    log "waiting for another set-up of $cache to finish"
    flock 9
fi
if [ ! -f "$venv/.deps-installed" ]; then
    py="$(find_python)" || {
        echo "ERROR: espnet-early-exit needs Python >=3.12,<3.14 (espnet 202611 requires it)," >&2
        echo "       and none was found: tried \$PYTHON, python3.12, python3.13, python3 on PATH" >&2
        echo "       and pyenv's versions. Install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
        exit 1
    }
    log "creating $venv with $py ($("$py" --version 2>&1)); installing espnet[asr,train] and torch takes a few minutes"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "${root}[test]" >&2
    touch "$venv/.deps-installed"
else
    log "reusing $venv"
fi
# (re)point the editable install at this checkout when it points elsewhere (another clone)
installed="$(cd / && "$venv/bin/python" -c 'import espnet_early_exit, os; print(os.path.dirname(os.path.dirname(os.path.realpath(espnet_early_exit.__file__))))' 2>/dev/null)" \
    || installed=""
if [ "$installed" != "$(realpath "$root")" ]; then
    log "installing espnet-early-exit from $root (editable)"
    pip_log="$(mktemp)"
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >"$pip_log" 2>&1 \
        || { cat "$pip_log" >&2; rm -f "$pip_log"; echo "ERROR: pip install -e $root failed" >&2; exit 1; }
    rm -f "$pip_log"
fi

# Debian packages: sctk sox flac (sclite scoring, audio tools), shellcheck (tests/test_shellcheck.py)
# and a C compiler (the kernel below)
apt_pkgs=()
if ! command -v sctk >/dev/null 2>&1 && [ ! -x /usr/lib/sctk/bin/sclite ]; then
    apt_pkgs+=(sctk sox flac)
fi
if ! command -v shellcheck >/dev/null 2>&1; then
    apt_pkgs+=(shellcheck)
fi
if [ -z "${CC:-}" ] && ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 \
        && ! command -v clang >/dev/null 2>&1; then  # the compilers frame_stats.py looks for
    apt_pkgs+=(gcc)
fi
if [ -z "${EEE_SKIP_APT:-}" ] && [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "installing Debian packages ${apt_pkgs[*]}"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}"; } >&2 \
            || log "WARNING: apt-get failed; without sctk scoring uses the in-Python WER, without gcc decoding uses torch ops, without shellcheck its test is skipped"
    else
        log "NOTE: not installed (no apt-get as root): ${apt_pkgs[*]}; scoring falls back to the in-Python WER (sctk), decoding to torch ops (gcc), the shell lint test is skipped (shellcheck)"
    fi
fi

# the C kernel of the per-frame CTC statistics (exit policies, greedy search; CPU decoding is
# slower without it, not wrong): built once per source version into the cache
if ! kernel_log="$(cd / && "$venv/bin/python" -m espnet_early_exit.frame_stats build 2>&1)"; then
    log "WARNING: the frame-statistics kernel was not built, decoding uses torch ops:"
    echo "$kernel_log" >&2
fi
echo "$venv"
