#!/usr/bin/env bash
# LibriSpeech-100: ESPnet's egs2/librispeech_100/asr1 recipe with the early-exit Conformer
# (conf/train_asr.yaml -> ../../../conf/tuning/train_ee_conformer_ls100.yaml: exits after blocks
# 2, 4, ..., 12; decoding: conf/decode_asr.yaml, ESPnet's without an LM).
# Train on train_clean_100 (speed perturbed x0.9/1.0/1.1), validate on dev (= dev_clean + dev_other),
# decode test_clean test_other dev_clean dev_other at every exit and with the exit policies.
#
#   LIBRISPEECH=/data/corpora ./run.sh       the folder holding LibriSpeech/{train-clean-100,dev-clean,...}
#   ./run.sh --download true                 first download the 5 parts (about 6.4 GB) from openslr.org
#                                            into $LIBRISPEECH (default: ./downloads)
#   ./run.sh --stage 12 --inference_nj 16    any option of ../../TEMPLATE/asr1/asr.sh (--help)
#
# Outputs: data/ dump/ exp/ in this directory (--workdir DIR to put them elsewhere).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/scripts/recipe_lib.sh"

train_set=train_clean_100
valid_set=dev
test_sets="test_clean test_other dev_clean dev_other"

# --download true|false is this recipe's own option; everything else goes to the driver
download=false
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --download) download=$2; shift 2 ;;
        --download=*) download=${1#*=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case "${download}" in true|false) ;; *) echo "ERROR: --download must be true or false" >&2; exit 2 ;; esac

data_opts=""
if ${download}; then data_opts="--download"; fi
corpus=$(recipe_corpus LIBRISPEECH "${LIBRISPEECH:-}" LibriSpeech \
    "\$LIBRISPEECH/LibriSpeech/{train-clean-100,dev-clean,dev-other,test-clean,test-other}/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac and <spk>-<chapter>.trans.txt (from https://www.openslr.org/12, or run with --download true)" \
    "${download}" "${here}" "${train_set} ${valid_set} ${test_sets}" "${args[@]+"${args[@]}"}")

# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/path.sh"

exec "${root}/egs2/TEMPLATE/asr1/asr.sh" \
    --workdir "${here}" \
    --lang en \
    --ngpu 1 \
    --local_data_script "${root}/local/librispeech.py" \
    --local_data_opts "--corpus_dir ${corpus:-none} ${data_opts}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --max_wav_duration 30 \
    --token_type bpe \
    --nbpe 5000 \
    --asr_config "${here}/conf/train_asr.yaml" \
    --inference_config "${here}/conf/decode_asr.yaml" \
    --exit_policies "entropy:0.05,0.1,0.2 max_posterior:0.9,0.95,0.98 nbest_posterior:0.9,0.95,0.99 oracle" \
    "${args[@]+"${args[@]}"}"
