"""The Python side of the recipe stages (egs2/TEMPLATE/asr1/asr.sh), one module per job.

Run from the shell through one command line, ``python -m espnet_early_exit.bin.stage <command>``
(see :mod:`espnet_early_exit.bin.stage`):

- :mod:`.markers`: the ``.done`` marker every finished stage output carries, worker pools, progress;
- :mod:`.data_dirs`: stage 2 (speed perturbation) and stage 4 (duration filter) on Kaldi data dirs;
- :mod:`.format_audio`: stage 3, cutting and converting the audio into ``dump/``;
- :mod:`.tokens`: stage 5 (sentencepiece model and token list) and the text shapes of stage 10;
- :mod:`.jobs`: splitting key files over parallel jobs and merging their decoding outputs (10, 12);
- :mod:`.config`: reading a value of a YAML config for the shell.
- :mod:`.onnx_backend`: stage 12 with ``--inference_backend onnx``: what its runtime can decode.

Kaldi tables and atomic outputs come from :mod:`espnet_early_exit.fileio`. Every stage output is
written to ``<dir>.tmp`` and renamed into place with its ``.done`` marker inside, so an interrupted
stage leaves nothing that a rerun would take for finished. Light: importing a module here loads
neither torch nor ESPnet.
"""
