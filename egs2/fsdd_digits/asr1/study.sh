#!/usr/bin/env bash
# The FSDD early-exit study in one command (CPU sized; see docs/fsdd_study.md for the results).
#
#   ./study.sh --workdir /tmp/fsdd_work                      every default part, one after the other
#   ./study.sh --workdir W --fsdd_dir DIR --epochs 5 --parts "ee interctc policies tables"
#
# Parts (--parts, run in this order whatever order is given):
#   prep      stages 1-5 and 10 of the recipe (data, dump, char tokens, statistics)
#   ee        train the early-exit Conformer from scratch (conf/tuning/train_ee_conformer6_ctc.yaml:
#             6 blocks, d 144, an exit + own norm + own CTC head after every block)
#   interctc  train ESPnet's stock conformer with interCTC after blocks 1-5 (one shared head,
#             conf/tuning/train_interctc_conformer6_ctc.yaml), same data, schedule and epochs
#   decode    greedy CTC at every exit of both models on dev, test and test_unseen_spk (interCTC:
#             its weights loaded into an equivalent ee_conformer, exit_norm shared, one head;
#             the equivalence with stock model.encode is checked on one utterance)
#   policies  the EE model's exit policies on dev and test (--policies), for RESULTS.md and the
#             budget table (threshold chosen on dev, reported on test)
#   single    single-exit (no-EE) baselines, one model per depth in --single_depths
#             (conf/tuning/train_single_conformer6_ctc.yaml with num_blocks and exit_layers set to N)
#   ft        EE fine-tuned from the single-exit 6-block model (add_exits, then --init_param;
#             --ft_epochs epochs)
#   conv1d4   the EE model with the light conv1d4 front, and its exit policies on dev and test
#   tables    <workdir>/study_results.md (--out) and .json (--results docs/results/fsdd/study.json)
# Default parts: prep ee interctc decode policies tables (add "single ft conv1d4" for the rest).
#
# Options: --fsdd_dir DIR (FSDD recordings/), --workdir DIR (data/ dump/ exp/ go here; default
# /tmp/fsdd_study), --epochs N (every model; default 5), --num_train N (2000), --threads N
# (torch threads per training; default 2), --concurrent true (train ee and interctc at the same
# time with 1 thread each instead of one after the other), --policies "...", --out FILE,
# --single_depths "1 2 3 4 5 6" (part single), --ft_epochs N (part ft; default 3), --num_eval N
# (utterances of dev, test and test_unseen_spk each; default 200).
# Wall times of every part go to <workdir>/study_times.tsv and into the tables.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"

fsdd_dir="${root}/../shared/data/fsdd/recordings"
workdir=/tmp/fsdd_study
epochs=5
num_train=2000
num_eval=200
threads=2
concurrent=false
single_depths="1 2 3 4 5 6"
ft_epochs=3
parts="prep ee interctc decode policies tables"
policies="entropy:0.01,0.02,0.03,0.05,0.08,0.15 max_posterior:0.9,0.95,0.98 nbest_posterior:0.9,0.99 oracle"
out=
results=
invocation="$(printf '%q ' "$0" "$@")"
while [ $# -gt 0 ]; do
    case "$1" in
        --fsdd_dir) fsdd_dir=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --num_train) num_train=$2; shift 2 ;;
        --num_eval) num_eval=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --concurrent) concurrent=$2; shift 2 ;;
        --parts) parts=$2; shift 2 ;;
        --policies) policies=$2; shift 2 ;;
        --single_depths) single_depths=$2; shift 2 ;;
        --ft_epochs) ft_epochs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "study.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
mkdir -p "${workdir}"
workdir="$(cd "${workdir}" && pwd)"
fsdd_dir="$(cd "${fsdd_dir}" && pwd)"
[ -n "${out}" ] || out="${workdir}/study_results.md"
[ -n "${results}" ] || results="${workdir}/study_results.json"
printf '%s\t%s\n' "$(date -u +%FT%T)" "${invocation% }" >>"${workdir}/study_commands.tsv"
python=${PYTHON:-python3}
conf="${here}/conf"
times="${workdir}/study_times.tsv"
has() { [[ " ${parts} " == *" $1 "* ]]; }
log() { echo "$(date -u +%FT%T) (study.sh) $*"; }
recipe() { "${here}/run.sh" --fsdd_dir "${fsdd_dir}" --workdir "${workdir}" --num_train "${num_train}" \
    --num_dev "${num_eval}" --num_test "${num_eval}" --num_test_unseen "${num_eval}" \
    --inference_config "${conf}/decode_asr.yaml" "$@"; }
timed() {  # name command...: run, append "name<TAB>seconds" to the times file
    local name=$1 s rc=0
    shift
    s=$(date +%s)
    log "part ${name}: start"
    "$@" || rc=$?
    [ "${rc}" -eq 0 ] || { log "part ${name} failed (${rc})"; return "${rc}"; }
    printf '%s\t%s\n' "${name}" "$(( $(date +%s) - s ))" >>"${times}"
    log "part ${name}: $(( $(date +%s) - s )) s"
}
train() {  # tag config nthreads [extra asr_train options] [epochs]
    local tag=$1 cfg=$2 nt=$3 extra=${4:-} ep=${5:-${epochs}}
    OMP_NUM_THREADS=${nt} MKL_NUM_THREADS=${nt} recipe --stage 11 --stop_stage 11 \
        --asr_config "${cfg}" --asr_tag "${tag}" --asr_args "--max_epoch ${ep}${extra:+ ${extra}}"
}
decode() {  # exp test_sets exit_policies
    recipe --stage 12 --stop_stage 13 --asr_exp "$1" --test_sets "$2" --exit_policies "$3"
}

exp="${workdir}/exp"
if has prep; then
    timed prep recipe --stage 1 --stop_stage 10 --asr_config "${conf}/tuning/train_ee_conformer6_ctc.yaml"
fi
if has ee && has interctc && ${concurrent}; then
    s0=$(date +%s)
    ( timed ee_concurrent_1thread train ee6 "${conf}/tuning/train_ee_conformer6_ctc.yaml" 1 ) &
    p1=$!
    ( timed interctc_concurrent_1thread train interctc6 "${conf}/tuning/train_interctc_conformer6_ctc.yaml" 1 ) &
    p2=$!
    wait "${p1}"
    wait "${p2}"
    printf '%s\t%s\n' "ee+interctc (concurrent, together)" "$(( $(date +%s) - s0 ))" >>"${times}"
else
    has ee && timed "ee_${threads}threads" train ee6 "${conf}/tuning/train_ee_conformer6_ctc.yaml" "${threads}"
    has interctc && timed "interctc_${threads}threads" train interctc6 "${conf}/tuning/train_interctc_conformer6_ctc.yaml" "${threads}"
fi
if has decode; then
    timed decode_ee decode "${exp}/asr_ee6" "dev test test_unseen_spk" ""
    [ -f "${exp}/asr_interctc6_as_ee/equivalence.json" ] || timed convert_interctc "${python}" -m espnet_early_exit.bin.interctc_to_ee \
        --src_exp "${exp}/asr_interctc6" --out_exp "${exp}/asr_interctc6_as_ee" \
        --verify_wav_scp "${workdir}/dump/raw/test/wav.scp"
    timed decode_interctc decode "${exp}/asr_interctc6_as_ee" "dev test test_unseen_spk" ""
fi
if has policies; then
    timed policies decode "${exp}/asr_ee6" "dev test" "${policies}"
fi
if has single; then
    for n in ${single_depths}; do
        _extra=""
        [ "${n}" = 6 ] || _extra="--encoder_conf num_blocks=${n} --encoder_conf exit_layers=[${n}]"
        timed "single${n}_${threads}threads" train "single${n}" "${conf}/tuning/train_single_conformer6_ctc.yaml" \
            "${threads}" "${_extra}"
        timed "decode_single${n}" decode "${exp}/asr_single${n}" "test test_unseen_spk" ""
    done
fi
if has ft; then
    [ -f "${exp}/asr_single6/.train.done" ] || { log "ft needs the single6 model (part single)"; exit 1; }
    timed ft_add_exits "${python}" -m espnet_early_exit.bin.add_exits --src "${exp}/asr_single6" \
        --exit_layers 1 2 3 4 5 6 --out_dir "${exp}/ee6_ft_init"
    timed "ee_ft_${ft_epochs}epochs_${threads}threads" train ee6_ft "${exp}/ee6_ft_init/config.yaml" "${threads}" \
        "--init_param ${exp}/ee6_ft_init/init.pth" "${ft_epochs}"
    timed decode_ee_ft decode "${exp}/asr_ee6_ft" "dev test test_unseen_spk" ""
fi
if has conv1d4; then
    timed "ee_conv1d4_${threads}threads" train ee6_conv1d4 "${conf}/tuning/train_ee_conformer6_ctc_conv1d4.yaml" "${threads}"
    timed decode_ee_conv1d4 decode "${exp}/asr_ee6_conv1d4" "dev test test_unseen_spk" ""
    timed policies_conv1d4 decode "${exp}/asr_ee6_conv1d4" "dev test" "${policies}"
fi
if has tables; then
    "${python}" "${here}/study_tables.py" --out "${out}" --times "${times}" \
        --results "${results}" --commands "${workdir}/study_commands.tsv" \
        --equivalence "${exp}/asr_interctc6_as_ee/equivalence.json" \
        --test_sets test test_unseen_spk dev \
        --model "EE from scratch (per-exit norm+head)=${exp}/asr_ee6" \
        --model "ESPnet interCTC (shared norm+head)=${exp}/asr_interctc6_as_ee" \
        --model "single-exit baselines (one model per depth)=$(for n in ${single_depths}; do printf '%s,' "${exp}/asr_single${n}"; done)" \
        --model "EE fine-tuned from single-exit 6=${exp}/asr_ee6_ft" \
        --model "EE from scratch, conv1d4 front=${exp}/asr_ee6_conv1d4" \
        --policy_exp "${exp}/asr_ee6" --policy_exp "${exp}/asr_ee6_conv1d4"
    log "tables: ${out}"
fi
