#!/usr/bin/env bash
# The AN4 early-exit study in one command (CPU sized; the page: docs/an4_study.md, its raw
# numbers: docs/results/an4/*.json). Resumable: run it again after a stop and it goes on where
# it stopped (finished parts are skipped, a training cut off restarts from its last checkpoint).
#
#   AN4=/data/corpora egs2/an4/asr1/study.sh --workdir /tmp/an4_study     every part
#   egs2/an4/asr1/study.sh --workdir W --parts "ee interctc" --seeds "1"   some of it
#
# Parts (--parts, run in this order whatever order is given):
#   prep      stages 1-5 and 10 of run.sh (ESPnet's splits, speed perturbation, BPE 30, statistics)
#   ee        (a) the EE Conformer from scratch, an exit after every block
#             (conf/tuning/train_ee_conformer6_ctc.yaml), one model per seed
#   interctc  (b) ESPnet interCTC at the same layers (train_interctc_conformer6_ctc.yaml), one per
#             seed, rewritten as an equivalent EE model (interctc_to_ee) to decode every layer
#   single    (c) the stock single-exit model (train_stock_conformer6_ctc.yaml: ESPnet's conformer
#             + espnet, no plugin class) at each depth of --single_depths; the last depth (the
#             EE model's) with every seed, the others with the first seed
#   ft        (d) EE fine-tuned from the last-depth stock model of the first seed (add_exits, then
#             --init_param; --ft_epochs epochs)
#   aed       the EE model with an attention decoder at its last exit (train_ee_conformer6_aed.yaml,
#             first seed); its last exit also decoded by joint CTC/attention beam 10 on test
#             (conf/tuning/decode_joint_beam10.yaml: ESPnet's an4 decoding)
#   policies  (e) the exit policies (--policies) of every EE-from-scratch seed on train_dev and
#             test (thresholds are chosen on train_dev by the tables); then issue 14's policies
#             (--trace_policies: agreement, and learned, fitted per seed by fit_exit_policy on
#             the all-exits pass of data/train_nodev_fit -- every n-th utterance of train_nodev,
#             about --fit_utt of them, decoded without scoring: neither train_dev nor test --
#             into exp/asr_ee_s<seed>/exit_policy.json), derived from the same all-exits passes
#   tables    study_tables.py: <results_dir>/*.json from the experiments, every table in
#             <workdir>/study_results.md, and the docs pages (tools/render_docs.py)
# Every model is decoded by greedy CTC at every exit on train_dev and test. Default: every part.
#
# Options: --an4_root DIR (the folder holding an4/; default $AN4, else ../shared/data/an4 from
# the repository root), --workdir DIR (data/ dump/ exp/; default /tmp/an4_study), --epochs N (every
# model from scratch; default 10), --seeds "1 2 3" (ESPnet's --seed), --single_depths "2 4 6",
# --ft_epochs N (5), --concurrent true|false (true, the default: two trainings at once with one
# thread each; false: one after the other with --threads N torch threads, default 2 -- only on
# an otherwise idle machine: two threads next to other work can be several times slower than
# one), --policies "...", --trace_policies "..." (agreement patiences, learned probabilities),
# --fit_utt N (300: size of the learned policy's fit set), --conf DIR (the conf/ folder, default
# the recipe's), --ndev_utt N (train_dev size; only for small test copies of AN4),
# --results_dir DIR (docs/results/an4; with this default the tables part also re-renders
# docs/an4_study.md by tools/render_docs.py).
# Wall times of every part (and of every interrupted or failed try) go to
# <workdir>/study_times.tsv and onto the page.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"

invocation="$([ -z "${AN4:-}" ] || printf 'AN4=%q ' "${AN4}"; printf '%q ' "$0" "$@")"
an4_root=${AN4:-${root}/../shared/data/an4}
workdir=/tmp/an4_study
epochs=10
seeds="1 2 3"
single_depths="2 4 6"
ft_epochs=5
threads=2
concurrent=true
conf="${here}/conf"
ndev_utt=
parts="prep ee interctc single ft aed policies tables"
policies="entropy:0.02,0.05,0.1,0.2,0.3,0.4 max_posterior:0.8,0.9,0.95,0.98,0.99 nbest_posterior:0.8,0.9,0.95,0.99 oracle"
trace_policies="agreement:1,2,3 learned:0.5,0.7,0.8,0.9,0.95,0.98,0.99"
fit_set=train_nodev_fit  # the learned policy's fit set (study_targets.FIT_SET)
fit_utt=300
results_dir="${root}/docs/results/an4"
while [ $# -gt 0 ]; do
    case "$1" in
        --an4_root) an4_root=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --single_depths) single_depths=$2; shift 2 ;;
        --ft_epochs) ft_epochs=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --concurrent) concurrent=$2; shift 2 ;;
        --policies) policies=$2; shift 2 ;;
        --trace_policies) trace_policies=$2; shift 2 ;;
        --fit_utt) fit_utt=$2; shift 2 ;;
        --conf) conf=$2; shift 2 ;;
        --ndev_utt) ndev_utt=$2; shift 2 ;;
        --parts) parts=$2; shift 2 ;;
        --results_dir) results_dir=$2; shift 2 ;;
        -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
        *) echo "study.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
case "${concurrent}" in true|false) ;; *) echo "study.sh: --concurrent must be true or false" >&2; exit 2 ;; esac
mkdir -p "${workdir}"
workdir="$(cd "${workdir}" && pwd)"
conf="$(cd "${conf}" && pwd)"
[ -d "${an4_root}" ] && an4_root="$(cd "${an4_root}" && pwd)"
python=${PYTHON:-python3}
exp="${workdir}/exp"
times="${workdir}/study_times.tsv"
read -r -a seed_list <<<"${seeds}"
read -r -a depth_list <<<"${single_depths}"
seed1=${seed_list[0]}
full=${depth_list[${#depth_list[@]}-1]}  # the last depth: the EE models' depth
greedy_sets="train_dev test"

printf '%s\t%s\n' "$(date -u +%FT%T)" "${invocation}" >>"${workdir}/study_commands.tsv"
has() { [[ " ${parts} " == *" $1 "* ]]; }
log() { echo "$(date -u +%FT%T) (study.sh) $*"; }
recipe() {
    local data_opts=()
    [ -z "${ndev_utt}" ] || data_opts=(--local_data_opts "--an4_root ${an4_root} --ndev_utt ${ndev_utt}")
    "${here}/run.sh" --an4_root "${an4_root}" --workdir "${workdir}" \
        --inference_config "${conf}/decode_asr.yaml" "${data_opts[@]+"${data_opts[@]}"}" "$@"
}

# timed NAME MARKER command...: skipped when MARKER exists (work done before); else runs the
# command and appends "NAME<TAB>seconds<TAB>ok|failed" to the times file (a try cut off by a
# signal: "interrupted", by the EXIT trap), and creates MARKER on success. The whole run of
# study.sh adds a line "total" (its wall time: concurrent parts overlap).
current=
started=0
study_start=$(date +%s)
on_exit() {  # all|part
    local rc=$?
    [ -z "${current}" ] || printf '%s\t%s\tinterrupted\n' "${current}" "$(( $(date +%s) - started ))" >>"${times}"
    [ "$1" != all ] || printf 'total\t%s\t%s\n' "$(( $(date +%s) - study_start ))" \
        "$([ "${rc}" -eq 0 ] && echo ok || echo stopped)" >>"${times}"
}
trap 'on_exit all' EXIT
timed() {
    local name=$1 marker=$2 rc=0 took
    shift 2
    if [ -e "${marker}" ]; then log "part ${name}: done before (${marker})"; return 0; fi
    current=${name}
    started=$(date +%s)
    log "part ${name}: start"
    "$@" || rc=$?
    took=$(( $(date +%s) - started ))
    printf '%s\t%s\t%s\n' "${name}" "${took}" "$([ "${rc}" -eq 0 ] && echo ok || echo failed)" >>"${times}"
    current=
    [ "${rc}" -eq 0 ] || { log "part ${name} failed (${rc})"; return "${rc}"; }
    mkdir -p "$(dirname "${marker}")"
    touch "${marker}"
    log "part ${name}: ${took} s"
}

train() {  # tag config nthreads epochs [extra asr_train options]
    local tag=$1 cfg=$2 nt=$3 ep=$4 extra=${5:-}
    OMP_NUM_THREADS=${nt} MKL_NUM_THREADS=${nt} recipe --stage 11 --stop_stage 11 \
        --asr_config "${cfg}" --asr_tag "${tag}" --asr_args "--max_epoch ${ep}${extra:+ ${extra}}"
}
# trainings "tag|config|epochs|extra options" ...: one after the other with --threads threads,
# or two at a time with one thread each (--concurrent true)
trainings() {
    local spec tag cfg ep extra pids=()
    for spec in "$@"; do
        IFS='|' read -r tag cfg ep extra <<<"${spec}"
        if ! ${concurrent}; then
            timed "train_${tag}_${threads}threads" "${exp}/asr_${tag}/.train.done" \
                train "${tag}" "${cfg}" "${threads}" "${ep}" "${extra}"
            continue
        fi
        ( trap 'on_exit part' EXIT; timed "train_${tag}_1thread_concurrent" "${exp}/asr_${tag}/.train.done" \
            train "${tag}" "${cfg}" 1 "${ep}" "${extra}" ) &
        pids+=("$!")
        [ ${#pids[@]} -lt 2 ] || { wait_all "${pids[@]}"; pids=(); }
    done
    [ ${#pids[@]} -eq 0 ] || wait_all "${pids[@]}"
}
wait_all() {  # pid...: wait for every one; fails when one failed
    local p rc=0
    for p in "$@"; do wait "${p}" || rc=$?; done
    return "${rc}"
}
decode() {  # exp test_sets exit_policies [more recipe options]
    local e=$1 sets=$2 pol=$3
    shift 3
    recipe --stage 12 --stop_stage 13 --asr_exp "${e}" --test_sets "${sets}" --exit_policies "${pol}" "$@"
}
# in_workdir command...: run it where the recipe runs (configs hold paths relative to the workdir)
in_workdir() { (cd "${workdir}" && "$@"); }
# as_ee TAG: the stock exp asr_TAG rewritten as the equivalent EE exp asr_TAG_as_ee, decoded
as_ee() {
    local src="${exp}/asr_$1" out="${exp}/asr_$1_as_ee"
    timed "convert_$1" "${out}/.study_convert.done" in_workdir "${python}" -m espnet_early_exit.bin.interctc_to_ee \
        --src_exp "${src}" --out_exp "${out}" --verify_wav_scp "${workdir}/dump/raw/test/wav.scp"
    timed "decode_$1" "${out}/.study_decode.done" decode "${out}" "${greedy_sets}" ""
}

ee_cfg="${conf}/tuning/train_ee_conformer6_ctc.yaml"
aed_job="ee_aed_s${seed1}|${conf}/tuning/train_ee_conformer6_aed.yaml|${epochs}|--seed ${seed1}"
if has prep; then
    timed prep "${workdir}/.study_prep.done" recipe --stage 1 --stop_stage 10 --asr_config "${ee_cfg}"
fi
if has ee || has interctc; then
    jobs=()
    for s in "${seed_list[@]}"; do
        has ee && jobs+=("ee_s${s}|${ee_cfg}|${epochs}|--seed ${s}")
        has interctc && jobs+=("interctc_s${s}|${conf}/tuning/train_interctc_conformer6_ctc.yaml|${epochs}|--seed ${s}")
    done
    trainings "${jobs[@]}"
    for s in "${seed_list[@]}"; do
        has ee && timed "decode_ee_s${s}" "${exp}/asr_ee_s${s}/.study_decode.done" \
            decode "${exp}/asr_ee_s${s}" "${greedy_sets}" ""
        has interctc && as_ee "interctc_s${s}"
    done
fi
if has single; then
    jobs=()
    for n in "${depth_list[@]}"; do
        depth_opt=""
        [ "${n}" = "${full}" ] || depth_opt=" --encoder_conf num_blocks=${n}"
        for s in "${seed_list[@]}"; do
            [ "${n}" = "${full}" ] || [ "${s}" = "${seed1}" ] || continue
            jobs+=("stock${n}_s${s}|${conf}/tuning/train_stock_conformer6_ctc.yaml|${epochs}|--seed ${s}${depth_opt}")
        done
    done
    has aed && jobs+=("${aed_job}")  # trained here, in a pair, rather than alone in part aed
    trainings "${jobs[@]}"
    for n in "${depth_list[@]}"; do
        for s in "${seed_list[@]}"; do
            [ "${n}" = "${full}" ] || [ "${s}" = "${seed1}" ] || continue
            as_ee "stock${n}_s${s}"
        done
    done
fi
if has ft; then
    src="${exp}/asr_stock${full}_s${seed1}"
    [ -f "${src}/.train.done" ] || { log "part ft needs ${src} (part single)"; exit 1; }
    read -r -a layers <<<"$(seq -s ' ' 1 "${full}")"
    timed ft_add_exits "${exp}/ee_ft_init/init.pth" in_workdir "${python}" -m espnet_early_exit.bin.add_exits \
        --src "${src}" --exit_layers "${layers[@]}" --out_dir "${exp}/ee_ft_init"
    trainings "ee_ft|${exp}/ee_ft_init/config.yaml|${ft_epochs}|--seed ${seed1} --init_param ${exp}/ee_ft_init/init.pth"
    timed decode_ee_ft "${exp}/asr_ee_ft/.study_decode.done" decode "${exp}/asr_ee_ft" "${greedy_sets}" ""
fi
if has aed; then
    trainings "${aed_job}"
    timed "decode_ee_aed_s${seed1}" "${exp}/asr_ee_aed_s${seed1}/.study_decode.done" \
        decode "${exp}/asr_ee_aed_s${seed1}" "${greedy_sets}" ""
    timed "decode_ee_aed_s${seed1}_joint_beam10" "${exp}/asr_ee_aed_s${seed1}/.study_decode_joint.done" \
        decode "${exp}/asr_ee_aed_s${seed1}" test "" --inference_config "${conf}/tuning/decode_joint_beam10.yaml"
fi
# data/<fit_set>: every n-th utterance of data/train_nodev (about --fit_utt), formatted by stage 3
make_fit_set() {
    local src="${workdir}/data/train_nodev" dst="${workdir}/data/${fit_set}" n every f
    n=$(wc -l <"${src}/wav.scp")
    every=$(( (n + fit_utt - 1) / fit_utt ))
    rm -rf "${dst}"
    mkdir -p "${dst}"
    awk -v every="${every}" '(NR - 1) % every == 0 {print $1}' "${src}/wav.scp" >"${dst}.keys"
    for f in wav.scp text utt2spk; do
        awk 'NR == FNR {keep[$1]; next} $1 in keep' "${dst}.keys" "${src}/${f}" >"${dst}/${f}"
    done
    rm "${dst}.keys"
    recipe --stage 3 --stop_stage 3 --test_sets "${fit_set}"
}
# fit_policy EXP: the learned policy fitted on EXP's all-exits pass of the fit set (no transcript
# read), beside the model, where stage 12 and the decoder look for it
fit_policy() {
    local e=$1 pass
    for pass in "${e}"/decode_asr_*/"${fit_set}"; do
        [ -d "${pass}" ] || { log "no all-exits pass of ${fit_set} in ${e}"; return 1; }
        in_workdir "${python}" -m espnet_early_exit.bin.fit_exit_policy --all_exits_dir "${pass}" \
            --out "${e}/exit_policy.json"
        return
    done
}
if has policies; then
    for s in "${seed_list[@]}"; do
        timed "policies_ee_s${s}" "${exp}/asr_ee_s${s}/.study_policies.done" \
            decode "${exp}/asr_ee_s${s}" "${greedy_sets}" "${policies}"
    done
    timed fit_set "${workdir}/.study_fit_set.done" make_fit_set
    for s in "${seed_list[@]}"; do
        e="${exp}/asr_ee_s${s}"
        timed "decode_fit_ee_s${s}" "${e}/.study_fit_decode.done" \
            recipe --stage 12 --stop_stage 12 --asr_exp "${e}" --test_sets "${fit_set}" --exit_policies ""
        timed "fit_policy_ee_s${s}" "${e}/.study_fit_policy.done" fit_policy "${e}"
        timed "trace_policies_ee_s${s}" "${e}/.study_trace_policies.done" \
            decode "${e}" "${greedy_sets}" "${trace_policies}"
    done
fi
if has tables; then
    "${python}" "${here}/study_tables.py" collect --exp_dir "${exp}" --times "${times}" \
        --commands "${workdir}/study_commands.tsv" --seeds "${seed_list[@]}" \
        --single_depths "${depth_list[@]}" --data_dir "${workdir}/dump/raw" --out_dir "${results_dir}"
    "${python}" "${here}/study_tables.py" render --results_dir "${results_dir}" --out "${workdir}/study_results.md"
    log "tables: ${results_dir}/*.json, ${workdir}/study_results.md"
    if [ "$(cd "${results_dir}" && pwd)" = "${root}/docs/results/an4" ]; then
        "${python}" "${root}/tools/render_docs.py"  # docs/an4_study.md (and any other page whose results changed)
    fi
fi
