"""EarlyExitASRTask: ESPnet's ASRTask with the plugin registered.

ESPnet's trainer spawns one worker per GPU and pickles the task class into it; unpickling
imports this module, which registers the plugin inside the worker too.
"""

import logging

from espnet2.tasks.asr import ASRTask

from espnet_early_exit.registry import register

register()


class EarlyExitASRTask(ASRTask):
    """ASRTask whose choices include ee_* encoders and the ee_espnet model."""

    @classmethod
    def main_worker(cls, args):
        register()  # also when a spawned worker reaches here by another import path
        return super().main_worker(args)

    @classmethod
    def build_model(cls, args):
        model = super().build_model(args)
        set_unused_parameters(args, model)
        return model


def set_unused_parameters(args, model) -> None:
    """Turn on ESPnet's ``unused_parameters`` (DDP's ``find_unused_parameters``) for a
    distributed training whose model may leave parameters without a gradient on a step (see
    ``EarlyExitASRModel.unused_parameter_reasons``), and only then: without it DDP stops
    at the next step ("Expected to have finished reduction in the prior iteration"); with it,
    every step walks the autograd graph. ESPnet lets build functions change ``args`` before
    it saves config.yaml and builds the trainer's options from it."""
    if not getattr(args, "distributed", False) or getattr(args, "unused_parameters", True):
        return
    reasons = getattr(model, "unused_parameter_reasons", list)()
    if reasons:
        args.unused_parameters = True
        logging.info("unused_parameters: true (DDP find_unused_parameters), because "
                     + "; ".join(reasons))
