#!/usr/bin/env bash
# Run a command, or an array of jobs, on this machine with its output in a log file (Kaldi's run.pl
# interface, so espnet2.bin.launch can use it as --cmd):
#
#   run_local.sh [--gpu N] [--num_threads N] [--mem X] [--name X] [JOB=1:N] LOG CMD [ARGS...]
#
# With JOB=1:N the N jobs run in parallel and every "JOB" in LOG and in the arguments becomes the
# job number. Each log starts with the command and ends with "# Ended (code C)". On failure the
# tail of each failed log is printed with its path, and the exit status is 1.
# --gpu, --num_threads, --mem and --name are accepted for compatibility and ignored
# (CUDA_VISIBLE_DEVICES is left as it is).
set -euo pipefail

while [[ $# -gt 0 && "$1" == --* ]]; do
    case "$1" in
        --gpu|--num_threads|--mem|--name|--max_jobs_run|--config) shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done

first=1
last=1
array=false
if [[ $# -gt 0 && "$1" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first=${BASH_REMATCH[1]}
    last=${BASH_REMATCH[2]}
    array=true
    shift
fi
if [[ $# -lt 2 ]]; then
    echo "usage: $0 [--gpu N] [JOB=1:N] LOG CMD [ARGS...]" >&2
    exit 2
fi
log_template=$1
shift

run_one() {  # job number -> runs the command with JOB replaced, output into its log
    local job=$1 logf cmd=() a
    logf=${log_template//JOB/${job}}
    for a in "${@:2}"; do
        if ${array}; then cmd+=("${a//JOB/${job}}"); else cmd+=("${a}"); fi
    done
    mkdir -p "$(dirname "${logf}")"
    local start=${SECONDS} rc=0
    {
        printf '#'; printf ' %q' "${cmd[@]}"; printf '\n'
        echo "# Started at $(date)"
    } >"${logf}"
    "${cmd[@]}" >>"${logf}" 2>&1 || rc=$?
    {
        echo "# Accounting: time=$((SECONDS - start)) seconds"
        echo "# Ended (code ${rc}) at $(date)"
    } >>"${logf}"
    return "${rc}"
}

pids=()
for ((j = first; j <= last; j++)); do
    run_one "${j}" "$@" &
    pids+=($!)
done

failed=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=($((first + i)))
done

if [[ ${#failed[@]} -gt 0 ]]; then
    for j in "${failed[@]}"; do
        logf=${log_template//JOB/${j}}
        echo "$0: job ${j} failed; the last lines of ${logf}:" >&2
        tail -n 30 "${logf}" >&2 || true
        echo "$0: full log: ${logf}" >&2
    done
    echo "$0: ${#failed[@]} of $((last - first + 1)) jobs failed" >&2
    exit 1
fi
