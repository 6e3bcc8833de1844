"""EarlyExitASRTask: ESPnet's ASRTask with the plugin registered.

ESPnet's trainer spawns one worker per GPU and pickles the task class into it; unpickling
imports this module, which registers the plugin inside the worker too.
"""

import logging

from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer

from espnet_early_exit.fileio import check_torch_file
from espnet_early_exit.registry import register

register()


class EarlyExitTrainer(Trainer):
    """ESPnet's Trainer; resuming from a truncated checkpoint.pth stops with one error naming it."""

    @staticmethod
    def resume(checkpoint, *args, **kwargs):
        check_torch_file(checkpoint, "checkpoint", hint=(
            "its save was cut short (a killed training, a full disk): remove it to train again "
            "from the first epoch, or put back a copy"))
        return Trainer.resume(checkpoint, *args, **kwargs)


class EarlyExitASRTask(ASRTask):
    """ASRTask whose choices include ee_* encoders and the ee_espnet model."""

    trainer = EarlyExitTrainer

    @classmethod
    def main_worker(cls, args):
        register()  # also when a spawned worker reaches here by another import path
        warn_random_backbone(args)
        return super().main_worker(args)

    @classmethod
    def build_model(cls, args):
        model = super().build_model(args)
        set_unused_parameters(args, model)
        record_encoder_conf(args, model)
        return model


def record_encoder_conf(args, model) -> None:
    """Add the encoder's ``checkpoint_conf()`` (if it has one) to ``args.encoder_conf``, which
    ESPnet then saves in config.yaml: what rebuilds the encoder for its checkpoint without what
    training read (``ee_hf_ssl``: the backbone's config instead of the hub)."""
    extra = getattr(model.encoder, "checkpoint_conf", None)
    if extra is not None:
        args.encoder_conf = dict(args.encoder_conf or {}, **extra())


def warn_random_backbone(args) -> None:
    """Training with a config.yaml saved by a training (``load_pretrained: false``) starts
    the backbone from random weights unless a checkpoint comes in: say so."""
    conf = getattr(args, "encoder_conf", None) or {}
    if (getattr(args, "encoder", None) == "ee_hf_ssl" and conf.get("load_pretrained") is False
            and not getattr(args, "collect_stats", False)
            and not getattr(args, "init_param", None)):
        logging.warning(
            "ee_hf_ssl: encoder_conf.load_pretrained is false: the backbone starts from random "
            "weights unless a checkpoint is resumed (a config.yaml saved by a training says so; "
            "set load_pretrained: true to start from model_name_or_path's weights)"
        )


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
