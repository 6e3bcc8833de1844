#!/usr/bin/env bash
# The GPU check, ready for a machine with one GPU, no internet, Python 3.12 and torch,
# torchaudio, transformers, onnxruntime and sentencepiece preinstalled:
#
#   benchmarks/gpu_check.sh --prepare DIR
#       here (with the package index): runs the dry run while recording what it imports, and
#       downloads the distributions the GPU machine lacks (ESPnet and the others, pinned to the
#       versions here) as wheels for CPython 3.12 manylinux x86_64 (pip download --no-deps)
#       into DIR/wheels; reports their size plus the repository's (at most 64 MiB together).
#       Left out: wandb (optional to ESPnet), numba and llvmlite (replaced, where absent, by
#       the decorators-only benchmarks/shims/numba: nothing the check runs is compiled by numba)
#   benchmarks/gpu_check.sh [--wheels DIR/wheels] [--results FILE] [--steps N]
#       on the GPU machine: installs the wheels offline (a venv on top of the system's
#       packages), then, each part under its own time limit (all within 8 minutes):
#       1. steps: N (300) training steps of the LibriSpeech-100 config on random-length
#          synthetic batches with AMP, single exit then EE: step time, peak memory, ratios
#       2. training: benchmarks/bench_training.py --device cuda (step time, memory, FLOPs)
#       3. inference: benchmarks/bench_inference.py --device cuda
#       and writes one results file (default docs/results/bench/gpu_check.json) holding the
#       three parts, the GPU's name, the command, the commit and the date
#   benchmarks/gpu_check.sh --dry_run [--results FILE]
#       the same parts on the CPU with tiny sizes and no install (CI: tests/test_gpu_check.py)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python=${PYTHON:-python3}
mode=check
prepare_dir=
wheels=
results=
steps=300
budget_mib=64
run_args="benchmarks/gpu_check.sh $*"

die() { echo "gpu_check: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) [ $# -ge 2 ] || die "--prepare needs a folder"; mode=prepare; prepare_dir=$2; shift 2 ;;
        --dry_run) mode=dry_run; shift ;;
        --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; wheels=$2; shift 2 ;;
        --results) [ $# -ge 2 ] || die "--results needs a file"; results=$2; shift 2 ;;
        --steps) [ $# -ge 2 ] || die "--steps needs a number"; steps=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "${steps}" =~ ^[0-9]+$ ]] || die "--steps must be a number"

export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
declare -A seconds=()

# part NAME LIMIT_S CMD... -> runs CMD under a time limit, records its seconds; a failed or
# timed-out part is reported and left out of the results (the other parts still run)
part() {
    local name=$1 limit=$2 start=${SECONDS} rc=0
    shift 2
    echo "== ${name} (limit ${limit} s): $*"
    timeout "${limit}" "$@" || rc=$?
    seconds[${name}]=$((SECONDS - start))
    [ "${rc}" -eq 0 ] || echo "gpu_check: part ${name} failed (exit status ${rc})" >&2
    return 0
}

# run_parts DEVICE QUICK(true|false) RESULTS
run_parts() {
    local device=$1 quick=$2 out=$3 s_opts=() t_opts=() i_opts=() c_opts=() json name
    if ${quick}; then
        c_opts=(--dry_run)
        s_opts=(--quick --steps 4 --warmup 1 --batch 2 --min_seconds 0.5 --max_seconds 1.5 --vocab 64)
        t_opts=(--quick --variants single ee)
        i_opts=(--quick --variants conv2d_rank8_vocab64)
    else
        s_opts=(--steps "${steps}")
        t_opts=(--vocab 5000 --repeats 10 --variants single ee ee_eager ee_rank64_eager)
        i_opts=(--runs 1 --repeats 10)
    fi
    part steps 240 "${python}" "${repo}/benchmarks/gpu_check.py" steps --device "${device}" \
        --out "${work}/steps.json" "${s_opts[@]}"
    part training 120 "${python}" "${repo}/benchmarks/bench_training.py" --device "${device}" \
        --threads "${OMP_NUM_THREADS}" --results "${work}/training.json" "${t_opts[@]}"
    part inference 90 "${python}" "${repo}/benchmarks/bench_inference.py" --device "${device}" \
        --threads "${OMP_NUM_THREADS}" --results "${work}/inference.json" "${i_opts[@]}"
    json="{"
    for name in "${!seconds[@]}"; do json+="\"${name}\": ${seconds[${name}]}, "; done
    json="${json%, }}"
    "${python}" "${repo}/benchmarks/gpu_check.py" collect --out "${out}" --device "${device}" \
        --check_command "${run_args}" --seconds "${json}" "${c_opts[@]+"${c_opts[@]}"}" \
        --part "steps=${work}/steps.json" --part "training=${work}/training.json" \
        --part "inference=${work}/inference.json"
}

# mib PATH... -> their total size in MiB (one decimal)
mib() { du -cb "$@" | tail -n 1 | awk '{printf "%.1f", $1 / 1048576}'; }

prepare() {
    local dir=$1 req spec ok=true
    rm -rf "${dir}/wheels"
    mkdir -p "${dir}/wheels"
    echo "== the dry run, recording every import"
    PYTHONPROFILEIMPORTTIME=1 run_parts cpu true "${work}/dry_run.json" 2>"${dir}/importtime.log" \
        || die "the dry run failed (see ${dir}/importtime.log)"
    "${python}" "${repo}/benchmarks/gpu_check.py" wheels --imports "${dir}/importtime.log" >"${dir}/requirements.txt"
    echo "== $(wc -l <"${dir}/requirements.txt") distributions to bring (${dir}/requirements.txt)"
    while read -r spec; do
        [ -n "${spec}" ] || continue
        if ! "${python}" -m pip download --quiet --no-deps --only-binary=:all: --dest "${dir}/wheels" \
                --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
                --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
                --platform manylinux2014_x86_64 "${spec}"; then
            # no wheel on the index (an sdist only): build it here (CPython 3.12, x86_64 Linux)
            "${python}" -m pip wheel --quiet --no-deps --wheel-dir "${dir}/wheels" "${spec}" \
                || { echo "gpu_check: no wheel for ${spec}" >&2; ok=false; }
        fi
    done <"${dir}/requirements.txt"
    req=$(git -C "${repo}" ls-files -z | (cd "${repo}" && xargs -0 du -cb 2>/dev/null) | tail -n 1 | cut -f1)
    local wheels_mib total
    wheels_mib=$(mib "${dir}/wheels")
    total=$(awk -v w="${wheels_mib}" -v r="${req}" 'BEGIN {printf "%.1f", w + r / 1048576}')
    echo "wheels: ${wheels_mib} MiB in ${dir}/wheels; with the repository: ${total} MiB (limit ${budget_mib} MiB)"
    ${ok} || die "some distributions have no wheel"
    awk -v t="${total}" -v b="${budget_mib}" 'BEGIN {exit !(t <= b)}' || die "over the ${budget_mib} MiB limit"
    echo "on the GPU machine: benchmarks/gpu_check.sh --wheels ${dir}/wheels"
}

case "${mode}" in
    prepare)
        prepare "${prepare_dir}"
        ;;
    dry_run)
        run_parts cpu true "${results:-${work}/gpu_check.json}"
        [ -n "${results}" ] || cat "${work}/gpu_check.json"
        ;;
    check)
        if [ -n "${wheels}" ]; then
            echo "== installing $(find "${wheels}" -name '*.whl' | wc -l) wheels offline"
            "${python}" -m venv --system-site-packages "${work}/venv"
            "${work}/venv/bin/python" -m pip install --quiet --no-index --no-deps "${wheels}"/*.whl
            python="${work}/venv/bin/python"
        fi
        if ! "${python}" -c "import numba" 2>/dev/null; then  # see benchmarks/shims/numba
            echo "== numba is not installed: its stand-in benchmarks/shims/numba (decorators only)"
            export PYTHONPATH="${PYTHONPATH}:${repo}/benchmarks/shims"
        fi
        "${python}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
            || die "no CUDA device visible to torch (use --dry_run on a CPU)"
        run_parts cuda false "${results:-${repo}/docs/results/bench/gpu_check.json}"
        ;;
esac
