"""Corpus preparation (stage 1 of the recipes): one module per corpus, shared helpers in ``common``.

A package: the corpus modules import ``from local.common import ...``. Each runs as a script,
``python local/<corpus>.py --output_dir data ...`` (what ``asr.sh --local_data_script`` does) or
``python -m local.<corpus> ...``, with the repository root on ``PYTHONPATH`` (``path.sh`` and
``tools/activate.sh`` put it there; ``asr.sh`` adds the folder above ``local/`` for stage 1).
"""
