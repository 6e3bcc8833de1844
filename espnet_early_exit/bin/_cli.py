"""Small pieces every CLI of the package shares: booleans, the log level, logging set-up.

Deliberately free of torch/ESPnet imports so that light tools start fast.
"""

import argparse
import logging

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def str2bool(value: str) -> bool:
    """ESPnet-style boolean option values: true/false (also yes/no, 1/0)."""
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log_level", default="INFO", choices=LOG_LEVELS,
                        help="logging level (default: INFO)")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
