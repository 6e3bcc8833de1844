"""EarlyExitASRTask: ESPnet's ASRTask with the plugin registered.

ESPnet's trainer spawns one worker per GPU and pickles the task class into it; unpickling
imports this module, which registers the plugin inside the worker too.
"""

from espnet2.tasks.asr import ASRTask

from espnet_early_exit.registry import register

register()


class EarlyExitASRTask(ASRTask):
    """ASRTask whose choices include ee_* encoders and the ee_espnet model."""

    @classmethod
    def main_worker(cls, args):
        register()  # also when a spawned worker reaches here by another import path
        return super().main_worker(args)
