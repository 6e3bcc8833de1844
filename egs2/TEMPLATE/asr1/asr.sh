#!/usr/bin/env bash
# The one stage driver of espnet-early-exit: corpus -> Kaldi dir -> dump -> tokens -> stats ->
# training -> decoding at every exit -> scoring -> RESULTS.md. Each corpus recipe
# (egs2/<corpus>/asr1/run.sh, and ./run.sh for mini_an4) sets its options and calls this script.
# Stage numbers follow ESPnet's egs2/TEMPLATE/asr1/asr.sh; run with --help for the options.
set -euo pipefail
set -f  # no pathname expansion: option strings such as "--unk_symbol [unk]" are split on spaces only

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (asr.sh:${BASH_LINENO[0]}) $*"
}
die() {
    log "ERROR: $*" >&2
    exit 1
}
min() {
    local a=$1 b
    for b in "$@"; do [ "${b}" -lt "${a}" ] && a=${b}; done
    echo "${a}"
}
SECONDS=0
driver_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
utils="${driver_dir}/scripts"
nproc_=$(nproc 2>/dev/null || echo 1)

# ---------------------------------------------------------------------------- options
# General
stage=1                 # first stage to run
stop_stage=15           # last stage to run
workdir=.               # data/, dump/, exp/ (and downloads/) are written here
ngpu=1                  # GPUs for training (0: CPU)
num_nodes=1             # nodes for training
dist_launcher=local     # how training starts: local | slurm | mpi (see --help)
nj=${nproc_}            # parallel jobs (format, speed perturbation, collect stats)
inference_nj=${nproc_}  # parallel jobs in decoding
gpu_inference=false     # decode on a GPU
python=python3          # the python that runs everything
dumpdir=dump            # dumped audio
expdir=exp              # experiments
train_cmd="${utils}/run_local.sh"   # job command for parallel jobs (Kaldi run.pl interface)
cuda_cmd="${utils}/run_local.sh"    # job command for training (espnet2.bin.launch --cmd)
decode_cmd="${utils}/run_local.sh"  # job command for decoding
# Data preparation (stage 1)
local_data_script=      # the corpus module, e.g. local/librispeech.py (run as: python SCRIPT --output_dir data OPTS,
                        # with the folder above local/ on PYTHONPATH)
local_data_opts=        # its options
# Speed perturbation (stage 2)
speed_perturb_factors=  # e.g. "0.9 1.0 1.1"; empty: no stage 2
# Audio (stages 3-4)
fs=16000                # sampling rate of the dumped audio (others are resampled)
audio_format=flac       # flac or wav
min_wav_duration=0.1    # seconds; shorter training/validation utterances are dropped
max_wav_duration=20     # seconds; longer ones are dropped
# Tokens (stage 5)
token_type=bpe          # char or bpe
nbpe=30                 # sentencepiece vocabulary size
bpemode=unigram         # unigram or bpe
oov="<unk>"
blank="<blank>"
sos_eos="<sos/eos>"
bpe_input_sentence_size=100000000
bpe_nlsyms=             # comma-separated user-defined symbols for sentencepiece, e.g. "[unk]"
bpe_char_cover=1.0
bpe_train_text=         # default: the training set's text in the dump dir
nlsyms_txt=none         # file of non-linguistic symbols (one a line), or none
cleaner=none
g2p=none
lang=noinfo             # language tag; names the token list dir (data/<lang>_token_list)
# Training (stages 10-11)
asr_config=             # training config (YAML)
asr_args=               # extra options for asr_train, e.g. "--max_epoch 10"
asr_tag=                # exp/asr_<tag>; default from the config name, token type and args
asr_exp=                # the experiment dir (overrides --asr_tag)
asr_stats_dir=          # the collect-stats dir
feats_normalize=global_mvn  # used unless the config sets "normalize"
asr_speech_fold_length=800  # x100 samples
asr_text_fold_length=150
pretrained_model=
ignore_init_mismatch=false
# Decoding (stage 12)
inference_config=       # decoding config (YAML)
inference_args=         # extra options for asr_inference
inference_tag=          # decode_<tag>; default from the config name, args and model
inference_asr_model=    # model file in the experiment dir; default <criterion>.ave.pth from the config
batch_size=1
exit_decode_mode=one_pass   # one_pass: all exits in one pass (--all_exits); per_exit: one run per exit (real early stop, per-exit RTF)
exit_policies=          # dynamic exit policies, e.g. "entropy:0.2,0.4 max_posterior:0.8,0.9 oracle"
inference_backend=torch # torch: asr_inference (PyTorch + ESPnet); onnx: export once, decode with onnxruntime
onnx_quantize=none      # onnx backend: none (float32 graphs) or int8 (onnxruntime dynamic quantisation)
# Scoring (stage 13)
score_opts=             # extra options for espnet_early_exit.bin.score, e.g. "--remove_nonlexical true"
# Packing and upload (stages 14-15)
packed_model=           # the zip of stage 14 (default <exp>/asr_model.zip)
hf_repo=                # Hugging Face repo of stage 15, e.g. user/espnet_ee_conformer; empty: skip stage 15
hf_dry_run=false        # stage 15 only writes <exp>/hf_repo (no upload)
hf_token_env=HF_TOKEN   # the environment variable holding the Hugging Face token (never a CLI value)
hf_training_data=       # the training data and its licence, for the model card
# Sets
train_set=
valid_set=
test_sets=

help_message=$(cat <<EOF
Usage: $0 --train_set SET --valid_set SET --test_sets "SET ..." --asr_config CONF [options]

Stages (ESPnet's numbers; 6-9, the language model stages, do not exist here: decoding uses no LM;
16, ESPnet's zenodo upload, does not exist here):
   1  data preparation: python \${local_data_script} --output_dir data \${local_data_opts}
   2  speed perturbation of the training set -> data/<train_set>_sp (only with --speed_perturb_factors)
   3  format: cut segments, resample, write \${dumpdir}/raw/org/<train,valid> and \${dumpdir}/raw/<test>
   4  filter training/validation utterances by duration (and empty text) -> \${dumpdir}/raw/<set>
   5  token list (char, or a sentencepiece model for bpe) -> data/token_list/
  10  collect feature statistics -> \${expdir}/asr_stats_*
  11  training (resumes from the last checkpoint) -> \${expdir}/asr_<tag>
  12  decoding at every exit, and with each --exit_policies threshold -> <exp>/decode_<tag>/<test>/{exit<k>,<policy>_th<thr>}
      (--inference_backend onnx: export to <exp>/onnx[_int8]_<model>/ once, decode with onnxruntime
      -> <exp>/decode_onnx[_int8]_<tag>/<test>/...)
  13  scoring (WER/CER), exit costs, RESULTS.md and plots
  14  pack the model for the ESPnet model zoo -> <exp>/asr_model.zip (config, model, BPE model,
      RESULTS.md, plots, meta.yaml with the plugin's version)
  15  Hugging Face upload: only with --hf_repo (token from \$\${hf_token_env}; --hf_dry_run true
      only writes <exp>/hf_repo with the model card)
Every stage is idempotent: finished work is marked (.done) and skipped on a rerun; interrupted
work is cleaned and redone; training resumes (--resume true). Paths given on the command line
are relative to the current directory; outputs go under --workdir.

Options (default):
  # General
  --stage N              first stage (${stage})
  --stop_stage N         last stage (${stop_stage})
  --workdir DIR          where data/ dump/ exp/ go (${workdir})
  --ngpu N               GPUs for training, 0 = CPU (${ngpu})
  --num_nodes N          nodes for training (${num_nodes})
  --dist_launcher X      local: espnet2.bin.launch with --cuda_cmd on this machine (one node);
                         slurm / mpi: espnet2.bin.launch with --cuda_cmd set to Kaldi's slurm.pl /
                         queue.pl, which then start the nodes with srun / mpirun (${dist_launcher})
  --nj N                 parallel jobs for formatting, speed perturbation, statistics (${nj})
  --inference_nj N       parallel decoding jobs (${inference_nj})
  --gpu_inference BOOL   decode on a GPU (${gpu_inference})
  --python PY            python executable (${python})
  --dumpdir DIR          (${dumpdir})
  --expdir DIR           (${expdir})
  --train_cmd/--cuda_cmd/--decode_cmd CMD   job commands with Kaldi's run.pl interface
                         (default: ${utils}/run_local.sh)
  # Data preparation
  --local_data_script PY the corpus module (stage 1)
  --local_data_opts STR  its options (${local_data_opts:-none})
  --speed_perturb_factors "F ..."  (${speed_perturb_factors:-none})
  --fs HZ                sampling rate of the dumped audio (${fs})
  --audio_format X       flac or wav (${audio_format})
  --min_wav_duration S   (${min_wav_duration})
  --max_wav_duration S   (${max_wav_duration})
  # Tokens
  --token_type X         char or bpe (${token_type})
  --nbpe N               (${nbpe})
  --bpemode X            unigram or bpe (${bpemode})
  --bpe_train_text FILE  Kaldi text for sentencepiece (the training set's: ${dumpdir}/raw/<train_set>/text,
                         or data/<train_set>/text with speed perturbation)
  --bpe_nlsyms STR       comma-separated user-defined symbols (${bpe_nlsyms:-none})
  --bpe_char_cover F     (${bpe_char_cover})
  --bpe_input_sentence_size N (${bpe_input_sentence_size})
  --oov/--blank/--sos_eos SYM  (${oov} ${blank} ${sos_eos})
  --nlsyms_txt FILE      non-linguistic symbols (${nlsyms_txt})
  --cleaner X            (${cleaner})
  --g2p X                (${g2p})
  --lang X               (${lang})
  # Training
  --asr_config FILE      training config
  --asr_args STR         extra asr_train options, override the config
  --asr_tag TAG          experiment name: <expdir>/asr_<tag>
  --asr_exp DIR          experiment dir (overrides --asr_tag)
  --asr_stats_dir DIR    statistics dir
  --feats_normalize X    normalisation when the config sets none (${feats_normalize})
  --asr_speech_fold_length N (${asr_speech_fold_length})
  --asr_text_fold_length N   (${asr_text_fold_length})
  --pretrained_model STR --init_param for training (${pretrained_model:-none})
  --ignore_init_mismatch BOOL (${ignore_init_mismatch})
  # Decoding
  --inference_config FILE decoding config
  --inference_args STR   extra asr_inference options
  --inference_tag TAG    results go to <exp>/decode_<tag>
  --inference_asr_model F model file in the experiment dir (default: <criterion>.ave.pth from
                         the config's best_model_criterion, e.g. valid.loss.ave.pth)
  --batch_size N         (${batch_size})
  --exit_decode_mode X   one_pass: every exit in one pass (--all_exits true); per_exit: one run
                         per exit, stopping there (its RTF is measured) (${exit_decode_mode})
  --exit_policies STR    "policy:thr,thr ... oracle": <policy>_th<thr>/ per threshold; with
                         one_pass, entropy/max_posterior/agreement/learned are derived from
                         the all-exits pass, others decode once per threshold (${exit_policies:-none})
  --inference_backend X  torch: python -m espnet_early_exit.bin.asr_inference; onnx: stage 12
                         exports the model once (bin/export_onnx -> <exp>/onnx[_int8]_<model>/,
                         again only when the model file, or exit_policy.json beside it, is
                         newer) and decodes with onnxruntime
                         (bin/onnx_inference, no torch) into <exp>/decode_onnx[_int8]_<tag>/,
                         scored by stage 13 as the torch dirs are. onnx decodes greedy CTC
                         (--inference_config with beam_size 1, ctc_weight 1.0; no
                         --inference_args) with the policies of its runtime (fixed, entropy,
                         max_posterior, agreement, learned; others, such as nbest_posterior and
                         oracle, stop the driver before any stage runs); each threshold of
                         --exit_policies is decoded, stopping for real (${inference_backend})
  --onnx_quantize X      onnx backend: none (float32) or int8 (dynamic quantisation) (${onnx_quantize})
  # Scoring
  --score_opts STR       extra options for espnet_early_exit.bin.score (${score_opts:-none})
  # Packing and upload
  --packed_model ZIP     stage 14's output (default <exp>/asr_model.zip)
  --hf_repo USER/NAME    stage 15's Hugging Face repository; empty skips stage 15 (${hf_repo:-none})
  --hf_dry_run BOOL      only write <exp>/hf_repo, upload nothing (${hf_dry_run})
  --hf_token_env VAR     environment variable with the token (${hf_token_env}); tokens are never options
  --hf_training_data STR training data and licence for the model card (${hf_training_data:-none})
  # Sets
  --train_set SET  --valid_set SET  --test_sets "SET ..."
EOF
)

# every variable assigned between the "options" banner and help_message is an option
option_names=$(awk '/^# -+ options$/ {on = 1} /^help_message=/ {on = 0} on && /^[a-z_0-9]+=/ {sub(/=.*/, ""); print}' \
    "${BASH_SOURCE[0]}" | tr '\n' ' ')
given_options=" "
run_args="$0 $*"
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) echo "${help_message}"; exit 0 ;;
        --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
        --*) [ $# -ge 2 ] || die "option $1 needs a value (see --help)"; name=$1; value=$2; shift 2 ;;
        *) echo "${help_message}" >&2; die "unexpected argument '$1' (options are --name value)" ;;
    esac
    name=${name#--}
    name=${name//-/_}
    [[ " ${option_names} " == *" ${name} "* ]] || die "unknown option --${name} (see --help)"
    printf -v "${name}" '%s' "${value}"
    given_options+="${name} "
done

# Paths given on the command line are relative to where the driver was called from.
for name in workdir dumpdir expdir asr_config inference_config local_data_script bpe_train_text \
        nlsyms_txt asr_exp asr_stats_dir; do
    value=${!name}
    if [[ "${given_options}" == *" ${name} "* && -n "${value}" && "${value}" != none && "${value}" != /* ]]; then
        printf -v "${name}" '%s' "${PWD}/${value}"
    fi
done

# ---------------------------------------------------------------------------- checks
[ -n "${train_set}" ] || die "--train_set is required (see --help)"
[ -n "${valid_set}" ] || die "--valid_set is required (see --help)"
[ -n "${test_sets}" ] || die "--test_sets is required (see --help)"
[[ "${stage}" =~ ^[0-9]+$ && "${stop_stage}" =~ ^[0-9]+$ ]] || die "--stage/--stop_stage must be numbers"
case "${token_type}" in char|bpe) ;; *) die "--token_type must be char or bpe, not '${token_type}'" ;; esac
case "${dist_launcher}" in local|slurm|mpi) ;; *) die "--dist_launcher must be local, slurm or mpi" ;; esac
case "${exit_decode_mode}" in one_pass|per_exit) ;; *) die "--exit_decode_mode must be one_pass or per_exit" ;; esac
case "${inference_backend}" in torch|onnx) ;; *) die "--inference_backend must be torch or onnx, not '${inference_backend}'" ;; esac
case "${onnx_quantize}" in none|int8) ;; *) die "--onnx_quantize must be none or int8, not '${onnx_quantize}'" ;; esac
[ "${num_nodes}" -le 1 ] || [ "${dist_launcher}" != local ] \
    || die "--num_nodes ${num_nodes} needs --dist_launcher slurm or mpi (and --cuda_cmd slurm.pl/queue.pl)"
# espnet2.bin.launch chooses srun when the job command is slurm.pl, mpirun otherwise
_cuda_cmd_name=$(basename "${cuda_cmd%% *}")
if [ "${dist_launcher}" = slurm ] && [ "${_cuda_cmd_name}" != slurm.pl ]; then
    die "--dist_launcher slurm needs --cuda_cmd \"/path/to/slurm.pl --config conf/slurm.conf\" (Kaldi's slurm.pl)"
fi
if [ "${dist_launcher}" = mpi ] && { [ "${_cuda_cmd_name}" = slurm.pl ] || [ "${_cuda_cmd_name}" = run_local.sh ]; }; then
    die "--dist_launcher mpi needs --cuda_cmd set to a cluster job command such as Kaldi's queue.pl"
fi
command -v "${python}" >/dev/null || die "python '${python}' not found (set up the environment: . tools/activate.sh)"
if [[ "${fs}" =~ ^([0-9]+)k$ ]]; then fs=$((BASH_REMATCH[1] * 1000)); fi
[[ "${fs}" =~ ^[0-9]+$ ]] || die "--fs must be a number of Hz (or like 16k), not '${fs}'"
if [ -n "${asr_config}" ]; then [ -f "${asr_config}" ] || die "--asr_config ${asr_config} does not exist"; fi
if [ -n "${inference_config}" ]; then [ -f "${inference_config}" ] || die "--inference_config ${inference_config} does not exist"; fi

# exit policies: "name:thr,thr name" -> run names and their options
policy_runs=()   # "<dir name>|<asr_inference options>"
policy_names=()
for spec in ${exit_policies}; do
    policy=${spec%%:*}
    [[ "${policy}" =~ ^[a-z_]+$ ]] || die "bad --exit_policies entry '${spec}' (expected name:thr,thr or name)"
    policy_names+=("${policy}")
    if [[ "${spec}" == *:* ]]; then
        IFS=',' read -r -a thresholds <<<"${spec#*:}"
        for thr in "${thresholds[@]}"; do
            [[ "${thr}" =~ ^[-+0-9.eE]+$ ]] || die "bad threshold '${thr}' in --exit_policies entry '${spec}'"
            policy_runs+=("${policy}_th${thr}|--exit_policy ${policy} --exit_threshold ${thr}")
        done
    else
        policy_runs+=("${policy}|--exit_policy ${policy}")
    fi
done

# the onnx backend: what its runtime cannot decode stops the run now, not after training
if [ "${inference_backend}" = onnx ] && [ "${stage}" -le 12 ] && [ "${stop_stage}" -ge 12 ]; then
    [ -z "${inference_args}" ] || die "--inference_args are options of the torch decoder (asr_inference); --inference_backend onnx takes none"
    ! ${gpu_inference} || die "--gpu_inference true needs --inference_backend torch (the onnx backend decodes on the CPU)"
    "${python}" -m espnet_early_exit.bin.stage onnx_check ${inference_config:+--inference_config "${inference_config}"} \
        --policies "${policy_names[@]+"${policy_names[@]}"}" || die "see the message above"
fi

mkdir -p "${workdir}"
cd "${workdir}"
log "$0 ${run_args#* }"
log "working directory: ${PWD} (data/, ${dumpdir}/, ${expdir}/ are written here)"

# ---------------------------------------------------------------------------- names
data_feats="${dumpdir}/raw"
if [ "${lang}" != noinfo ]; then token_listdir="data/${lang}_token_list"; else token_listdir="data/token_list"; fi
bpedir="${token_listdir}/bpe_${bpemode}${nbpe}"
bpemodel="${bpedir}/bpe.model"
if [ "${token_type}" = bpe ]; then
    token_dir="${bpedir}"
else
    token_dir="${token_listdir}/char"
    bpemodel=none
fi
token_list="${token_dir}/tokens.txt"

lang_tag=""; [ "${lang}" != noinfo ] && lang_tag="_${lang}"
bpe_tag=""; [ "${token_type}" = bpe ] && bpe_tag="${nbpe}"
sp_tag=""; [ -n "${speed_perturb_factors}" ] && sp_tag="_sp"
if [ -z "${asr_tag}" ]; then
    if [ -n "${asr_config}" ]; then asr_tag="$(basename "${asr_config}" .yaml)_raw"; else asr_tag="train_raw"; fi
    asr_tag+="${lang_tag}_${token_type}${bpe_tag}"
    [ -n "${asr_args}" ] && asr_tag+="$(echo "${asr_args}" | sed -e 's/--/_/g' -e 's/[ |=/]//g')"
    asr_tag+="${sp_tag}"
fi
[ -n "${asr_stats_dir}" ] || asr_stats_dir="${expdir}/asr_stats_raw${lang_tag}_${token_type}${bpe_tag}${sp_tag}"
[ -n "${asr_exp}" ] || asr_exp="${expdir}/asr_${asr_tag}"

orig_train_set=${train_set}
[ -n "${speed_perturb_factors}" ] && train_set="${train_set}_sp"
# sentencepiece learns from the training transcripts: the dumped ones, or the Kaldi dir's when
# speed perturbation would only repeat each transcript once per factor
if [ -z "${bpe_train_text}" ]; then
    if [ -n "${speed_perturb_factors}" ]; then
        bpe_train_text="data/${orig_train_set}/text"
    else
        bpe_train_text="${data_feats}/${train_set}/text"
    fi
fi

config_get() {  # file key [default]
    if [ $# -ge 3 ]; then
        "${python}" -m espnet_early_exit.bin.stage config_get --config "$1" --default "$3" "$2"
    else
        "${python}" -m espnet_early_exit.bin.stage config_get --config "$1" "$2"
    fi
}

# dump dir of a set in stage 3: training and validation sets go to org/ (filtered in stage 4)
format_dest() {
    if [ "$1" = "${train_set}" ] || [ "$1" = "${valid_set}" ]; then
        echo "${data_feats}/org/$1"
    else
        echo "${data_feats}/$1"
    fi
}
# the sets that stage 3 formats, without repetitions
format_sets() {
    local seen=" " s
    for s in "${train_set}" "${valid_set}" ${test_sets}; do
        [[ "${seen}" == *" ${s} "* ]] && continue
        seen+="${s} "
        echo "${s}"
    done
}

# run a command with its output shown and kept in a log; on failure: tail + path
run_logged() {  # log_file cmd...
    local logf=$1 rc=0
    shift
    mkdir -p "$(dirname "${logf}")"
    { printf '#'; printf ' %q' "$@"; printf '\n'; } >"${logf}"
    "$@" 2>&1 | tee -a "${logf}" || rc=$?
    if [ "${rc}" -ne 0 ]; then
        log "ERROR: failed (exit code ${rc}); the last lines of ${logf}:" >&2
        tail -n 20 "${logf}" >&2
        die "see ${logf}"
    fi
}

in_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
skip_msg() { log "Stage $1: done already, skipping (remove $2 to redo)"; }

# ---------------------------------------------------------------------------- stage 1
if in_stage 1; then
    missing=()
    for dset in "${orig_train_set}" "${valid_set}" ${test_sets}; do
        [[ " ${missing[*]-} " == *" ${dset} "* ]] && continue
        [ -f "data/${dset}/.done" ] || missing+=("${dset}")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        skip_msg 1 "data/<set>/.done"
    else
        [ -n "${local_data_script}" ] || die "stage 1 needs --local_data_script (the corpus module in local/)"
        [ -f "${local_data_script}" ] || die "--local_data_script ${local_data_script} does not exist"
        log "Stage 1: data preparation with $(basename "${local_data_script}") -> data/ (missing: ${missing[*]})"
        # the corpus modules import their package (from local.common import ...): its parent goes on PYTHONPATH
        local_root="$(cd "$(dirname "${local_data_script}")/.." && pwd)"
        # shellcheck disable=SC2086
        run_logged data/log/data_prep.log env PYTHONPATH="${local_root}${PYTHONPATH:+:${PYTHONPATH}}" \
            "${python}" "${local_data_script}" --output_dir data ${local_data_opts}
        for dset in "${missing[@]}"; do
            [ -f "data/${dset}/.done" ] || die "stage 1 ran but data/${dset} was not made: is '${dset}' a set of this corpus?"
        done
    fi
fi

# ---------------------------------------------------------------------------- stage 2
if in_stage 2; then
    if [ -z "${speed_perturb_factors}" ]; then
        log "Stage 2: no --speed_perturb_factors, nothing to do"
    elif [ -f "data/${train_set}/.done" ]; then
        skip_msg 2 "data/${train_set}"
    else
        log "Stage 2: speed perturbation (factors ${speed_perturb_factors}): data/${orig_train_set} -> data/${train_set}"
        # shellcheck disable=SC2086
        run_logged "data/log/speed_perturb_${orig_train_set}.log" "${python}" -m espnet_early_exit.bin.stage speed_perturb \
            --data_dir "data/${orig_train_set}" --out_dir "data/${train_set}" \
            --audio_dir "${dumpdir}/speed_perturb/${orig_train_set}" --factors ${speed_perturb_factors} --nj "${nj}"
    fi
fi

# ---------------------------------------------------------------------------- stage 3
if in_stage 3; then
    todo=()
    for dset in $(format_sets); do
        [ -f "$(format_dest "${dset}")/.done" ] || todo+=("${dset}")
    done
    if [ ${#todo[@]} -eq 0 ]; then
        skip_msg 3 "${data_feats}/{org/,}<set>"
    fi
    for dset in "${todo[@]}"; do
        dest=$(format_dest "${dset}")
        [ -f "data/${dset}/.done" ] || [ -f "data/${dset}/wav.scp" ] || die "data/${dset} does not exist: run stage 1 (and 2) first"
        log "Stage 3: format audio of data/${dset} -> ${dest} (${fs} Hz ${audio_format}, ${nj} jobs)"
        run_logged "${data_feats}/log/format_${dset}.log" "${python}" -m espnet_early_exit.bin.stage format_audio \
            --data_dir "data/${dset}" --out_dir "${dest}" --fs "${fs}" --audio_format "${audio_format}" \
            --nj "${nj}" --resample
    done
fi

# ---------------------------------------------------------------------------- stage 4
if in_stage 4; then
    todo=()
    for dset in "${train_set}" "${valid_set}"; do
        [ -f "${data_feats}/${dset}/.done" ] || todo+=("${dset}")
    done
    [ ${#todo[@]} -eq 0 ] && skip_msg 4 "${data_feats}/${train_set} ${data_feats}/${valid_set}"
    for dset in "${todo[@]}"; do
        log "Stage 4: keep utterances of ${min_wav_duration}-${max_wav_duration} s: ${data_feats}/org/${dset} -> ${data_feats}/${dset}"
        [ -f "${data_feats}/org/${dset}/.done" ] || die "${data_feats}/org/${dset} does not exist: run stage 3 first"
        run_logged "${data_feats}/log/filter_${dset}.log" "${python}" -m espnet_early_exit.bin.stage filter_dir \
            --in_dir "${data_feats}/org/${dset}" --out_dir "${data_feats}/${dset}" --fs "${fs}" \
            --min_wav_duration "${min_wav_duration}" --max_wav_duration "${max_wav_duration}"
    done
fi

# ---------------------------------------------------------------------------- stage 5
if in_stage 5; then
    if [ -f "${token_dir}/.done" ]; then
        skip_msg 5 "${token_dir}"
    elif [ "${token_type}" = bpe ]; then
        log "Stage 5: sentencepiece ${bpemode} model with ${nbpe} pieces from ${bpe_train_text} -> ${token_list}"
        [ -f "${bpe_train_text}" ] || die "${bpe_train_text} does not exist: run stages 1-4 first"
        run_logged "${token_listdir}/log/bpe.log" "${python}" -m espnet_early_exit.bin.stage bpe_token_list \
            --text "${bpe_train_text}" --out_dir "${bpedir}" --nbpe "${nbpe}" --bpemode "${bpemode}" \
            --char_cover "${bpe_char_cover}" --input_sentence_size "${bpe_input_sentence_size}" \
            --nlsyms "${bpe_nlsyms}" --blank "${blank}" --oov "${oov}" --sos_eos "${sos_eos}"
    else
        log "Stage 5: character token list from ${data_feats}/${train_set}/text -> ${token_list}"
        [ -f "${data_feats}/${train_set}/text" ] || die "${data_feats}/${train_set}/text does not exist: run stages 1-4 first"
        rm -rf "${token_dir}.tmp"
        mkdir -p "${token_dir}.tmp"
        run_logged "${token_listdir}/log/char.log" "${python}" -m espnet2.bin.tokenize_text \
            --token_type char --input "${data_feats}/${train_set}/text" --output "${token_dir}.tmp/tokens.txt" \
            --field 2- --non_linguistic_symbols "${nlsyms_txt}" --cleaner "${cleaner}" --g2p "${g2p}" \
            --write_vocabulary true --add_symbol "${blank}:0" --add_symbol "${oov}:1" --add_symbol "${sos_eos}:-1"
        echo "{\"text\": \"${data_feats}/${train_set}/text\"}" >"${token_dir}.tmp/.done"
        rm -rf "${token_dir}"
        mv "${token_dir}.tmp" "${token_dir}"
        log "wrote ${token_list} ($(wc -l <"${token_list}") tokens)"
    fi
fi

# options shared by statistics and training
train_opts=()
if [ -n "${asr_config}" ]; then train_opts+=(--config "${asr_config}"); fi
train_opts+=(--use_preprocessor true --bpemodel "${bpemodel}" --token_type "${token_type}"
    --token_list "${token_list}" --non_linguistic_symbols "${nlsyms_txt}" --cleaner "${cleaner}"
    --g2p "${g2p}" --frontend_conf "fs=${fs}")
_train_dir="${data_feats}/${train_set}"
_valid_dir="${data_feats}/${valid_set}"

# ---------------------------------------------------------------------------- stage 10
if in_stage 10; then
    if [ -f "${asr_stats_dir}/.done" ]; then
        skip_msg 10 "${asr_stats_dir}"
    else
        for f in "${_train_dir}/wav.scp" "${_valid_dir}/wav.scp" "${token_list}"; do
            [ -f "${f}" ] || die "${f} does not exist: run stages 1-5 first"
        done
        _nj=$(min "${nj}" "$(wc -l <"${_train_dir}/wav.scp")" "$(wc -l <"${_valid_dir}/wav.scp")")
        _tmp="${asr_stats_dir}.tmp"
        _logdir="${_tmp}/logdir"
        rm -rf "${_tmp}"
        mkdir -p "${_logdir}"
        log "Stage 10: collect statistics of ${_train_dir} and ${_valid_dir} -> ${asr_stats_dir} (${_nj} jobs, logs: ${asr_stats_dir}/logdir/stats.*.log)"
        "${python}" -m espnet_early_exit.bin.stage split_keys --key_file "${_train_dir}/wav.scp" --nj "${_nj}" --out_template "${_logdir}/train.JOB.scp"
        "${python}" -m espnet_early_exit.bin.stage split_keys --key_file "${_valid_dir}/wav.scp" --nj "${_nj}" --out_template "${_logdir}/valid.JOB.scp"
        # shellcheck disable=SC2086
        ${train_cmd} JOB=1:"${_nj}" "${_logdir}/stats.JOB.log" \
            env OMP_NUM_THREADS=1 "${python}" -m espnet_early_exit.bin.asr_train --collect_stats true \
                "${train_opts[@]}" --ngpu 0 \
                --train_data_path_and_name_and_type "${_train_dir}/wav.scp,speech,sound" \
                --train_data_path_and_name_and_type "${_train_dir}/text,text,text" \
                --valid_data_path_and_name_and_type "${_valid_dir}/wav.scp,speech,sound" \
                --valid_data_path_and_name_and_type "${_valid_dir}/text,text,text" \
                --train_shape_file "${_logdir}/train.JOB.scp" --valid_shape_file "${_logdir}/valid.JOB.scp" \
                --output_dir "${_logdir}/stats.JOB" ${asr_args} \
            || die "collecting statistics failed (logs: ${_logdir}/stats.*.log)"
        _opts=()
        for i in $(seq "${_nj}"); do _opts+=(--input_dir "${_logdir}/stats.${i}"); done
        run_logged "${_logdir}/aggregate.log" "${python}" -m espnet2.bin.aggregate_stats_dirs "${_opts[@]}" --output_dir "${_tmp}"
        for part in train valid; do
            "${python}" -m espnet_early_exit.bin.stage text_shape --in_file "${_tmp}/${part}/text_shape" \
                --out_file "${_tmp}/${part}/text_shape.${token_type}" --token_list "${token_list}"
        done
        touch "${_tmp}/.done"
        rm -rf "${asr_stats_dir}"
        mv "${_tmp}" "${asr_stats_dir}"
    fi
fi

# ---------------------------------------------------------------------------- stage 11
if [ -z "${inference_asr_model}" ]; then
    _crit=
    if [ -f "${asr_exp}/config.yaml" ]; then
        _crit=$(config_get "${asr_exp}/config.yaml" best_model_criterion.0 "")
    elif [ -n "${asr_config}" ]; then
        _crit=$(config_get "${asr_config}" best_model_criterion.0 "")
    fi
    if [ -n "${_crit}" ]; then
        read -r -a _crit <<<"${_crit}"
        inference_asr_model="${_crit[0]}.${_crit[1]}.ave.pth"
    else
        inference_asr_model=valid.loss.ave.pth
    fi
fi

if in_stage 11; then
    if [ -f "${asr_exp}/.train.done" ] && [ -f "${asr_exp}/${inference_asr_model}" ]; then
        skip_msg 11 "${asr_exp}/.train.done to train on from the last checkpoint, or ${asr_exp}"
    else
        [ -f "${asr_stats_dir}/.done" ] || die "${asr_stats_dir} is not complete: run stage 10 first"
        _opts=()
        _normalize=${feats_normalize}
        if [ -n "${asr_config}" ]; then
            _normalize=$(config_get "${asr_config}" normalize "${feats_normalize}")
        fi
        if [ "${_normalize}" = global_mvn ]; then
            _opts+=(--normalize global_mvn --normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz")
        elif [ -n "${_normalize}" ] && [ "${_normalize}" != none ]; then
            _opts+=(--normalize "${_normalize}")
        fi
        if [ -n "${pretrained_model}" ]; then
            _opts+=(--init_param "${pretrained_model}" --ignore_init_mismatch "${ignore_init_mismatch}")
        fi
        _launch_opts=(--cmd "${cuda_cmd} --name ${asr_exp}/train.log" --log "${asr_exp}/train.log"
            --ngpu "${ngpu}" --num_nodes "${num_nodes}" --init_file_prefix "${asr_exp}/.dist_init_"
            --multiprocessing_distributed true)
        _max_epoch=$(echo " ${asr_args} " | sed -n 's/.* --max_epoch[ =]\([0-9]*\) .*/\1/p')
        [ -n "${_max_epoch}" ] || [ -z "${asr_config}" ] || _max_epoch=$(config_get "${asr_config}" max_epoch "?")
        mkdir -p "${asr_exp}"
        # one training per experiment dir: a second run (another terminal, a second study or
        # grid on the same workdir) would write the same checkpoints
        if command -v flock >/dev/null 2>&1; then
            exec {_train_lock}>"${asr_exp}/.train.lock"
            flock -n "${_train_lock}" \
                || die "another training is running in ${asr_exp} (it holds ${asr_exp}/.train.lock); wait for it or stop it"
        fi
        log "Stage 11: training ${asr_exp} (${ngpu} GPU(s), ${num_nodes} node(s), config ${asr_config:-none}); log: ${asr_exp}/train.log"
        # shellcheck disable=SC2086
        "${python}" -m espnet2.bin.launch "${_launch_opts[@]}" -- \
            "${python}" -m espnet_early_exit.bin.asr_train "${train_opts[@]}" \
                --train_data_path_and_name_and_type "${_train_dir}/wav.scp,speech,sound" \
                --train_data_path_and_name_and_type "${_train_dir}/text,text,text" \
                --train_shape_file "${asr_stats_dir}/train/speech_shape" \
                --train_shape_file "${asr_stats_dir}/train/text_shape.${token_type}" \
                --valid_data_path_and_name_and_type "${_valid_dir}/wav.scp,speech,sound" \
                --valid_data_path_and_name_and_type "${_valid_dir}/text,text,text" \
                --valid_shape_file "${asr_stats_dir}/valid/speech_shape" \
                --valid_shape_file "${asr_stats_dir}/valid/text_shape.${token_type}" \
                --resume true --fold_length "$((asr_speech_fold_length * 100))" \
                --fold_length "${asr_text_fold_length}" --output_dir "${asr_exp}" \
                "${_opts[@]}" ${asr_args} >"${asr_exp}/launch.log" 2>&1 &
        _pid=$!
        _seen=0
        while kill -0 "${_pid}" 2>/dev/null; do
            sleep 2
            _done_epochs=$(grep -c 'epoch results' "${asr_exp}/train.log" 2>/dev/null || true)
            if [ "${_done_epochs:-0}" -gt "${_seen}" ]; then
                _seen=${_done_epochs}
                _last=$(grep -o '[0-9]*epoch results' "${asr_exp}/train.log" | tail -n 1 | grep -o '^[0-9]*')
                log "Stage 11: epoch ${_last}/${_max_epoch} finished ($(grep 'epoch results' "${asr_exp}/train.log" | tail -n 1 | grep -o '\[valid\] [^,]*, [^,]*' || true))"
            fi
        done
        if ! wait "${_pid}"; then
            log "ERROR: training failed; the last lines of ${asr_exp}/train.log:" >&2
            tail -n 40 "${asr_exp}/train.log" >&2 2>/dev/null || tail -n 40 "${asr_exp}/launch.log" >&2
            die "see ${asr_exp}/train.log (and ${asr_exp}/launch.log)"
        fi
        [ -f "${asr_exp}/${inference_asr_model}" ] \
            || die "training finished but ${asr_exp}/${inference_asr_model} does not exist (choose another --inference_asr_model)"
        touch "${asr_exp}/.train.done"
        [ -z "${_train_lock:-}" ] || exec {_train_lock}>&-
        log "Stage 11: training finished: ${asr_exp}/${inference_asr_model}"
    fi
fi

# ---------------------------------------------------------------------------- stage 12
model_stem=$(echo "${inference_asr_model}" | sed -e 's/\//_/g' -e 's/\.[^.]*$//g')
if [ -z "${inference_tag}" ]; then
    if [ -n "${inference_config}" ]; then
        inference_tag="$(basename "${inference_config}" .yaml)"
        inference_tag=${inference_tag#decode_}
    else
        inference_tag=inference
    fi
    [ -n "${inference_args}" ] && inference_tag+="$(echo "${inference_args}" | sed -e 's/--/_/g' -e 's/[ |=]//g')"
    inference_tag+="_asr_model_${model_stem}"
fi
decode_root="${asr_exp}/decode_${inference_tag}"
# the onnx backend: the model exported once per model file and quantisation, decode dirs of its own
onnx_q=""; [ "${onnx_quantize}" = none ] || onnx_q="_${onnx_quantize}"
onnx_model_dir="${asr_exp}/onnx${onnx_q}_${model_stem}"
[ "${inference_backend}" = torch ] || decode_root="${asr_exp}/decode_onnx${onnx_q}_${inference_tag}"

exit_layers() {
    [ -f "${asr_exp}/config.yaml" ] || die "${asr_exp}/config.yaml does not exist: run stage 11 first"
    config_get "${asr_exp}/config.yaml" encoder_conf.exit_layers
}

# the onnx backend's graphs: exported (atomically) before the first decoding run that needs
# them, again only when what the export reads is newer: the model file, the learned policy's fit
# beside it, the packed thresholds beside the config
onnx_exported=false
export_onnx_once() {
    ${onnx_exported} && return 0
    local model="${asr_exp}/${inference_asr_model}" manifest="${onnx_model_dir}/manifest.json" src stale=false
    [ -f "${manifest}" ] || stale=true
    for src in "${model}" "$(dirname "${model}")/exit_policy.json" "${asr_exp}/selected_thresholds.json"; do
        if [ -f "${src}" ] && [ "${src}" -nt "${manifest}" ]; then stale=true; fi
    done
    if ! ${stale}; then
        log "Stage 12: ${onnx_model_dir} is up to date (remove it to export again)"
    else
        log "Stage 12: export ${model} to ONNX (quantisation: ${onnx_quantize}) -> ${onnx_model_dir}"
        run_logged "${onnx_model_dir}.log" "${python}" -m espnet_early_exit.bin.export_onnx \
            --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${model}" \
            --out_dir "${onnx_model_dir}" --quantize "${onnx_quantize}"
    fi
    onnx_exported=true
}

# one decoding run over a test set: split keys, nj jobs, merge into the output dirs. The jobs
# that finished in an interrupted run (<logdir>/output.JOB/.done for the same keys) are kept:
# only the others are decoded again, and only complete job outputs are merged.
decode_run() {  # dset run_name "outputs" options...
    local dset=$1 run=$2 outputs=$3
    shift 3
    local _data="${data_feats}/${dset}" _dir="${decode_root}/${dset}"
    local _logdir="${_dir}/logdir/${run}" _nj _ngpu=0 _threads out k _ranges range _pids=() _failed=0
    _nj=$(min "${inference_nj}" "$(wc -l <"${_data}/wav.scp")")
    ${gpu_inference} && _ngpu=1
    _threads=$((nproc_ / _nj)); [ "${_threads}" -ge 1 ] || _threads=1
    mkdir -p "${_logdir}"
    "${python}" -m espnet_early_exit.bin.stage split_keys --key_file "${_data}/wav.scp" --nj "${_nj}" --out_template "${_logdir}/keys.JOB.scp"
    _ranges=$("${python}" -m espnet_early_exit.bin.stage pending_jobs --out_template "${_logdir}/output.JOB" \
        --key_template "${_logdir}/keys.JOB.scp" --nj "${_nj}")
    # the decoder of the backend (the same options after it)
    local _tool=asr_inference _decoder
    if [ "${inference_backend}" = onnx ]; then
        _tool=onnx_inference
        [ -z "${_ranges}" ] || export_onnx_once
        _decoder=("${python}" -m espnet_early_exit.bin.onnx_inference --onnx_dir "${onnx_model_dir}"
            --num_threads "${_threads}")
    else
        _decoder=("${python}" -m espnet_early_exit.bin.asr_inference --ngpu "${_ngpu}"
            --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${asr_exp}/${inference_asr_model}")
        [ -n "${inference_config}" ] && _decoder+=(--config "${inference_config}")
    fi
    if [ -z "${_ranges}" ]; then
        log "Stage 12: ${dset} (${run}): the ${_nj} jobs finished already; merging them"
    else
        log "Stage 12: decoding ${dset} (${run}, jobs $(echo "${_ranges}" | tr '\n' ' ')of ${_nj}; logs: ${_logdir}/${_tool}.*.log)"
    fi
    for range in ${_ranges}; do
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=${_threads} ${decode_cmd} --gpu "${_ngpu}" JOB="${range}" "${_logdir}/${_tool}.JOB.log" \
            "${_decoder[@]}" --batch_size "${batch_size}" \
                --data_path_and_name_and_type "${_data}/wav.scp,speech,sound" --key_file "${_logdir}/keys.JOB.scp" \
                --output_dir "${_logdir}/output.JOB" "$@" ${inference_args} &
        _pids+=($!)
    done
    for k in "${_pids[@]+"${_pids[@]}"}"; do wait "${k}" || _failed=1; done
    [ "${_failed}" -eq 0 ] || die "decoding ${dset} (${run}) failed (logs: ${_logdir}/${_tool}.*.log); a rerun decodes only the jobs that did not finish"
    for out in ${outputs}; do
        local parts=()
        for k in $(seq "${_nj}"); do
            if [ "${run}" = exits ]; then parts+=("${_logdir}/output.${k}/${out}"); else parts+=("${_logdir}/output.${k}"); fi
        done
        "${python}" -m espnet_early_exit.bin.stage merge_decode --require_done --out_dir "${_dir}/${out}" "${parts[@]}" \
            >>"${_logdir}/merge.log" 2>&1 || { tail -n 20 "${_logdir}/merge.log" >&2; die "merging ${_dir}/${out} failed"; }
    done
}

if in_stage 12; then
    [ -f "${asr_exp}/${inference_asr_model}" ] || die "${asr_exp}/${inference_asr_model} does not exist: run stage 11 first"
    exits=$(exit_layers)
    [ "${inference_backend}" = torch ] \
        || log "Stage 12: onnx backend (onnxruntime, greedy CTC): ${onnx_model_dir} -> ${decode_root}"
    any=false
    for dset in ${test_sets}; do
        [ -f "${data_feats}/${dset}/.done" ] || die "${data_feats}/${dset} does not exist: run stages 3-4 first"
        _dir="${decode_root}/${dset}"
        # fixed exits
        todo=()
        for k in ${exits}; do [ -f "${_dir}/exit${k}/.done" ] || todo+=("${k}"); done
        if [ ${#todo[@]} -gt 0 ]; then
            any=true
            if [ "${exit_decode_mode}" = one_pass ]; then
                outs=""
                for k in ${exits}; do outs+="exit${k} "; done
                decode_run "${dset}" exits "${outs}" --all_exits true
            else
                for k in "${todo[@]}"; do
                    decode_run "${dset}" "exit${k}" "exit${k}" --exit_policy fixed --exit_layer "${k}"
                done
            fi
        fi
        # dynamic policies
        for entry in "${policy_runs[@]+"${policy_runs[@]}"}"; do
            out=${entry%%|*}
            read -r -a popts <<<"${entry#*|}"
            [ -f "${_dir}/${out}/.done" ] && continue
            any=true
            # a policy read from the exits' features: derived from the all-exits pass, no decoding
            # (torch backend; the onnx backend decodes each threshold, stopping for real)
            if [ "${inference_backend}" = torch ] && [ "${exit_decode_mode}" = one_pass ] \
                && [ -f "${_dir}/exit${exits##* }/features" ] \
                && [[ "${out}" =~ ^(entropy|max_posterior|agreement|learned)_th(.+)$ ]]; then
                log "Stage 12: ${dset}/${out} derived from the all-exits pass (timing.json: derived)"
                run_logged "${_dir}/logdir/${out}/derive.log" "${python}" -m espnet_early_exit.bin.tradeoff \
                    --all_exits_dir "${_dir}" --policy "${BASH_REMATCH[1]}" --thresholds "${BASH_REMATCH[2]}" \
                    --dir_names "${out}" --write_dir "${_dir}" --model_file "${asr_exp}/${inference_asr_model}" --quiet
                continue
            fi
            [ "${out}" = oracle ] && popts+=(--ref_text "${data_feats}/${dset}/text")
            decode_run "${dset}" "${out}" "${out}" "${popts[@]}"
        done
    done
    ${any} || skip_msg 12 "${decode_root}/<test_set>/<run>/.done"
fi

# ---------------------------------------------------------------------------- stage 13
if in_stage 13; then
    [ -d "${decode_root}" ] || die "${decode_root} does not exist: run stage 12 first"
    any=false
    for dset in ${test_sets}; do
        set +f
        _dirs=("${decode_root}/${dset}"/*/)
        set -f
        for d in "${_dirs[@]}"; do
            d=${d%/}
            [ -f "${d}/.done" ] || continue
            if [ -f "${d}/score_wer/result.json" ] && [ -f "${d}/score_cer/result.json" ] \
                && [ "${d}/score_wer/result.json" -nt "${d}/.done" ]; then
                continue
            fi
            any=true
            log "Stage 13: scoring ${d#"${decode_root}/"}"
            # shellcheck disable=SC2086
            run_logged "${d}/score.log" "${python}" -m espnet_early_exit.bin.score \
                --ref "${data_feats}/${dset}/text" --hyp "${d}/text" --out "${d}" ${score_opts}
        done
    done
    if [ ! -f "${asr_exp}/exit_costs.json" ]; then
        any=true
        log "Stage 13: exit costs (parameters, FLOPs) -> ${asr_exp}/exit_costs.json"
        run_logged "${asr_exp}/exit_costs.log" "${python}" -m espnet_early_exit.bin.exit_costs \
            --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${asr_exp}/${inference_asr_model}" \
            --out "${asr_exp}/exit_costs.json"
    fi
    if ${any} || [ ! -f "${asr_exp}/RESULTS.md" ]; then
        log "Stage 13: ${asr_exp}/RESULTS.md and plots"
        run_logged "${asr_exp}/make_results.log" "${python}" -m espnet_early_exit.bin.make_results --exp_dir "${asr_exp}"
        cat "${asr_exp}/RESULTS.md"
    else
        skip_msg 13 "${asr_exp}/RESULTS.md or a score_wer/ dir"
    fi
fi

# ---------------------------------------------------------------------------- stage 14
packed_model=${packed_model:-${asr_exp}/asr_model.zip}
if in_stage 14; then
    model_file="${asr_exp}/${inference_asr_model}"
    [ -f "${model_file}" ] || die "${model_file} does not exist: run stage 11 first"
    if [ -f "${packed_model}" ] && [ "${packed_model}" -nt "${model_file}" ] \
        && { [ ! -f "${asr_exp}/RESULTS.md" ] || [ "${packed_model}" -nt "${asr_exp}/RESULTS.md" ]; }; then
        skip_msg 14 "${packed_model}"
    else
        log "Stage 14: pack ${model_file} for the model zoo -> ${packed_model}"
        run_logged "${asr_exp}/pack.log" "${python}" -m espnet_early_exit.bin.pack_model \
            --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${model_file}" \
            --outpath "${packed_model}" --bpemodel "${bpemodel}"
    fi
fi

# ---------------------------------------------------------------------------- stage 15
if in_stage 15; then
    if [ -z "${hf_repo}" ]; then
        log "Stage 15: skipped (no --hf_repo; give one to upload, with --hf_dry_run true to only write the folder)"
    else
        [ -f "${packed_model}" ] || die "${packed_model} does not exist: run stage 14 first"
        log "Stage 15: Hugging Face repository ${hf_repo} (dry run: ${hf_dry_run}) -> ${asr_exp}/hf_repo"
        run_logged "${asr_exp}/upload.log" "${python}" -m espnet_early_exit.bin.upload_model \
            --packed "${packed_model}" --exp_dir "${asr_exp}" --hf_repo "${hf_repo}" \
            --dry_run "${hf_dry_run}" --token_env "${hf_token_env}" \
            ${hf_training_data:+--training_data "${hf_training_data}"}
    fi
fi

if [ -f "${asr_exp}/RESULTS.md" ]; then
    if [[ "${asr_exp}" == /* ]]; then log "results: ${asr_exp}/RESULTS.md"; else log "results: ${PWD}/${asr_exp}/RESULTS.md"; fi
fi
log "Successfully finished stages ${stage}-${stop_stage} in ${SECONDS} s (working directory ${PWD})"
