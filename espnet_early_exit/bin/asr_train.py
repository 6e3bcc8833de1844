"""ESPnet ASR training with the early-exit plugin registered.

Takes every option of `espnet2.bin.asr_train` (same parser, plus the plugin's choices):

    python -m espnet_early_exit.bin.asr_train --config conf/train_ee_conformer.yaml \
        --train_data_path_and_name_and_type dump/raw/train/wav.scp,speech,sound ...
"""

from espnet_early_exit.task import EarlyExitASRTask


def get_parser():
    return EarlyExitASRTask.get_parser()


def main(cmd=None):
    EarlyExitASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
