#!/usr/bin/env bash
# CMU AN4 (local/an4.py): ESPnet's egs2/an4/asr1 corpus and splits -- 948 training utterances of
# 74 speakers (train_dev = the first 100 in C-locale id order, train_nodev = the other 848,
# 38 min), test = 130 utterances of 10 other speakers; spelled letters, digits, names, commands.
# As in ESPnet's recipe: BPE 30 (unigram), speed perturbation 0.9/1.0/1.1, validation on
# train_dev, decoding of train_dev and test. Default model: an early-exit Conformer from scratch
# with an exit after every block (conf/train_asr.yaml, CTC only, ~30-60 min of training on a
# 2-core CPU), decoded greedily at every exit and with the exit policies. Other models in
# conf/tuning/ (each file's header says what it is and what it costs):
#   train_stock_conformer6_ctc.yaml     ESPnet's own conformer + espnet model, no plugin classes
#   train_interctc_conformer6_ctc.yaml  ESPnet interCTC at the same layers
#   train_ee_conformer6_aed.yaml        EE with an attention decoder at the last exit; decode it
#                                       with --inference_config conf/tuning/decode_joint_beam10.yaml
#
#   AN4=/data/corpora ./run.sh              the folder holding an4/ (CMU's an4_sphere.tar.gz unpacked:
#                                           an4/wav/{an4_clstk,an4test_clstk}/<spk>/*.sph, an4/etc/)
#   ./run.sh --an4_root DIR                 the same as $AN4
#   ./run.sh --download true                first fetch and unpack an4_sphere.tar.gz from
#                                           CMU into $AN4 (default: downloads/ in the workdir)
#   ./run.sh --asr_config conf/tuning/...   any option of ../../TEMPLATE/asr1/asr.sh (--help)
#
# Outputs: data/ dump/ exp/ in this directory (--workdir DIR to put them elsewhere).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/scripts/recipe_lib.sh"

train_set=train_nodev
valid_set=train_dev
test_sets="train_dev test"

corpus=${AN4:-}
download=false
args=()
while [ $# -gt 0 ]; do  # this recipe's own options; the rest goes to the driver
    case "$1" in
        --an4_root) corpus=$2; shift 2 ;;
        --an4_root=*) corpus=${1#*=}; shift ;;
        --download) download=$2; shift 2 ;;
        --download=*) download=${1#*=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case "${download}" in true|false) ;; *) echo "ERROR: --download must be true or false" >&2; exit 2 ;; esac
data_opts=""
if ${download}; then data_opts="--download"; fi
corpus=$(recipe_corpus AN4 "${corpus}" an4 \
    "\$AN4/an4/wav/{an4_clstk,an4test_clstk}/<spk>/<fileid>.sph and \$AN4/an4/etc/an4_{train,test}.transcription (CMU's an4_sphere.tar.gz from http://www.speech.cs.cmu.edu/databases/an4/, or run with --download true)" \
    "${download}" "${here}" "${train_set} ${valid_set} ${test_sets}" "${args[@]+"${args[@]}"}")

# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/path.sh"

exec "${root}/egs2/TEMPLATE/asr1/asr.sh" \
    --workdir "${here}" \
    --lang en \
    --ngpu 0 \
    --local_data_script "${root}/local/an4.py" \
    --local_data_opts "--an4_root ${corpus:-none} ${data_opts}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --token_type bpe \
    --nbpe 30 \
    --asr_config "${here}/conf/train_asr.yaml" \
    --inference_config "${here}/conf/decode_asr.yaml" \
    --exit_policies "entropy:0.05,0.1,0.2,0.4 max_posterior:0.9,0.95,0.98,0.99 oracle" \
    "${args[@]+"${args[@]}"}"
