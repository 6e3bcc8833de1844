#!/usr/bin/env bash
# TED-LIUM release 3 (legacy distribution): ESPnet's egs2/tedlium3/asr1 recipe with the
# early-exit Conformer. conf/train_asr.yaml -> ../../../conf/tuning/train_ee_conformer_ls100.yaml:
# the same Conformer as ESPnet's TED-LIUM 3 one (12 blocks, d 256, 6-block decoder) with exits
# after blocks 2, 4, ..., 12 (training schedule of the LibriSpeech-100 recipe). BPE 500 with
# "[unk]" as a user-defined symbol, speed perturbation x0.9/1.0/1.1, decoding of test and dev.
# Decoding (conf/decode_asr.yaml -> ../../../conf/decode_ee_att.yaml): joint CTC/attention beam
# search (beam 10, CTC weight 0.3) where an exit has a decoder, CTC prefix beam search elsewhere; no LM
# (ESPnet's recipe decodes with beam 40 and a Transformer LM, which this project does not train).
#
#   TEDLIUM3=/data/corpora ./run.sh          the folder holding TEDLIUM_release-3/legacy/{train,dev,test}
#   ./run.sh --stage 12 --inference_nj 16    any option of ../../TEMPLATE/asr1/asr.sh (--help)
#
# Outputs: data/ dump/ exp/ in this directory (--workdir DIR to put them elsewhere).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/scripts/recipe_lib.sh"

train_set=train
valid_set=dev
test_sets="test dev"

corpus=$(recipe_corpus TEDLIUM3 "${TEDLIUM3:-}" TEDLIUM_release-3 \
    "\$TEDLIUM3/TEDLIUM_release-3/legacy/{train,dev,test}/{sph/<talk>.sph,stm/<talk>.stm} (from https://www.openslr.org/51)" \
    false "${here}" "${train_set} ${valid_set} ${test_sets}" "$@")

# shellcheck source-path=SCRIPTDIR/../../..
. "${root}/egs2/TEMPLATE/asr1/path.sh"

exec "${root}/egs2/TEMPLATE/asr1/asr.sh" \
    --workdir "${here}" \
    --lang en \
    --ngpu 1 \
    --local_data_script "${root}/local/tedlium3.py" \
    --local_data_opts "--corpus_dir ${corpus:-none} --unk_symbol [unk]" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --token_type bpe \
    --nbpe 500 \
    --bpe_nlsyms "[unk]" \
    --asr_config "${here}/conf/train_asr.yaml" \
    --inference_config "${here}/conf/decode_asr.yaml" \
    --exit_policies "entropy:0.05,0.1,0.2 max_posterior:0.9,0.95,0.98 nbest_posterior:0.9,0.95,0.99 oracle" \
    "$@"
