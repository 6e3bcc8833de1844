#!/usr/bin/env bash
# mini_an4, the default recipe: a tiny early-exit Conformer (conf/train_asr.yaml) trained and
# decoded at every exit (conf/decode_asr.yaml -> ../../../conf/decode_ee_ctc_greedy.yaml: greedy
# CTC) on 8 real AN4 recordings shipped inside the espnet wheel (local/mini_an4.py; nothing is
# downloaded). Runs every stage of ../../TEMPLATE/asr1/asr.sh on the CPU in a few minutes and
# ends with exp/asr_*/RESULTS.md. The repository's top-level ./run.sh runs this recipe with its
# outputs next to itself.
#
#   ./run.sh                              everything (sets up the Python environment the first time)
#   ./run.sh --stage 12 --stop_stage 13   any option of the driver: ../../TEMPLATE/asr1/asr.sh --help
#   EEE_NO_SETUP=1 ./run.sh               use the python on PATH instead of tools/setup.sh's environment
#
# Outputs: data/ dump/ exp/ downloads/ in this directory (--workdir DIR to put them elsewhere).
# mini_an4 is a smoke test: 5 training and 2 test utterances (dev = test), no result to report;
# the policy thresholds are picked to spread the exits this tiny model takes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/path.sh"

"${root}/egs2/TEMPLATE/asr1/asr.sh" \
    --workdir "${here}" \
    --local_data_script "${root}/local/mini_an4.py" \
    --local_data_opts "--download_dir downloads" \
    --train_set train \
    --valid_set dev \
    --test_sets test \
    --token_type char \
    --ngpu 0 \
    --asr_config "${here}/conf/train_asr.yaml" \
    --inference_config "${here}/conf/decode_asr.yaml" \
    --exit_policies "entropy:0.52,0.56 max_posterior:0.4,0.5" \
    "$@"
cat <<EOF
NOTE: mini_an4 is a smoke test (5 training utterances: WER 100 % at every exit). Its numbers
      show that the pipeline runs, not how well early exit works. Numbers that mean something:
      the AN4 recipe (ESPnet's own small corpus, under an hour of CPU for one model):
          AN4=/folder/holding/an4 ${root}/egs2/an4/asr1/run.sh
      (--download true fetches AN4 from CMU; the whole study: egs2/an4/asr1/study.sh)
EOF
