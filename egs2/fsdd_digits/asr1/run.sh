#!/usr/bin/env bash
# Connected digits made from the Free Spoken Digit Dataset (local/fsdd_digits.py): 3-7 digits of
# one speaker per utterance, 16 kHz. Sets train/dev/test (5 speakers) and test_unseen_spk (the
# sixth). Character tokens; an early-exit Conformer from scratch (conf/train_asr.yaml ->
# conf/tuning/train_ee_conformer6_ctc.yaml: 6 blocks of d 144, an exit after every block, CTC
# only; about 25-45 min for 5 epochs on a 2-core CPU) decoded greedily at every exit
# (conf/decode_asr.yaml -> ../../../conf/decode_ee_ctc_greedy.yaml) and with the exit policies.
# The study's other models are in conf/tuning/. study.sh runs the whole study (EE vs ESPnet
# interCTC, policies, ...); results: docs/fsdd_study.md.
#
#   ./run.sh                                  recordings from ../shared/data/fsdd/recordings (next to the checkout)
#   ./run.sh --fsdd_dir DIR                   FSDD's recordings/ folder (<digit>_<speaker>_<index>.wav)
#   ./run.sh --num_train 500 --seed 1         sizes and seed of the generated sets
#   ./run.sh --workdir /tmp/fsdd              outputs there instead of this directory
#   ./run.sh --asr_config conf/...            any option of ../../TEMPLATE/asr1/asr.sh (--help)
#
# Outputs: data/ dump/ exp/ and the generated audio (downloads/fsdd_digits/) in --workdir
# (default: this directory).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/scripts/recipe_lib.sh"

fsdd_dir="${root}/../shared/data/fsdd/recordings"
num_train=2000
num_dev=200
num_test=200
num_test_unseen=200
seed=0
args=()
while [ $# -gt 0 ]; do  # this recipe's own options; the rest goes to the driver
    case "$1" in
        --fsdd_dir) fsdd_dir=$(absolute "$2"); shift 2 ;;
        --num_train) num_train=$2; shift 2 ;;
        --num_dev) num_dev=$2; shift 2 ;;
        --num_test) num_test=$2; shift 2 ;;
        --num_test_unseen) num_test_unseen=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done

# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/path.sh"

exec "${root}/egs2/TEMPLATE/asr1/asr.sh" \
    --workdir "${here}" \
    --ngpu 0 \
    --local_data_script "${root}/local/fsdd_digits.py" \
    --local_data_opts "--fsdd_dir ${fsdd_dir} --output_audio_dir downloads/fsdd_digits --num_train ${num_train} --num_dev ${num_dev} --num_test ${num_test} --num_test_unseen ${num_test_unseen} --seed ${seed}" \
    --train_set train \
    --valid_set dev \
    --test_sets "test test_unseen_spk" \
    --token_type char \
    --asr_config "${here}/conf/train_asr.yaml" \
    --inference_config "${here}/conf/decode_asr.yaml" \
    --exit_policies "entropy:0.02,0.05,0.1,0.2 max_posterior:0.9,0.95,0.98,0.99 oracle" \
    "${args[@]+"${args[@]}"}"
