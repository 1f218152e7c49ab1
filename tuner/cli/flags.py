"""The flags several commands share, and the types that check a flag's value (one line naming the
flag, the allowed values and the bad one)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tuner.base.render import did_you_mean, quoted
from tuner.errors import ConfigError

STORAGE_ENV = "TUNER_STORAGE"
# one precedence wherever a storage is read, said in every --storage help and docs/config.md
STORAGE_PRECEDENCE = ("--storage wins over $TUNER_STORAGE, which wins over the config's "
                      "study.storage")


def storage_from(flag: str | None) -> str | None:
    """The storage URL a command uses: ``--storage``, else ``$TUNER_STORAGE`` (which keeps a
    password out of the command line and ``ps``), else None (the config's, or none)."""
    return flag or os.environ.get(STORAGE_ENV) or None


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own message, with the closest choice suggested and the value escaped
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            if isinstance(action, argparse._SubParsersAction):
                raise argparse.ArgumentError(None, f"{quoted(value)} is not a command"
                                             f"{did_you_mean(value, choices)}; commands: "
                                             f"{', '.join(choices)}")
            raise argparse.ArgumentError(action, f"{quoted(value)} is not allowed"
                                         f"{did_you_mean(value, choices)}; allowed: "
                                         f"{', '.join(choices)}")


def int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
nonneg_int = int_at_least(0, "an integer >= 0")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0 (e.g. 0.05), got {text!r}")
    return value


def accuracy_flags(parser: argparse.ArgumentParser) -> None:
    from tuner.config import ACCURACY_METRICS

    parser.add_argument("--accuracy-tolerance", type=_tolerance,
                        help="search reduced precision (bf16/f16 math, where the CPU has it): "
                        "every trial's outputs must stay within this deviation from TensorFlow's "
                        "defaults (e.g. 0.05); without it, only float noise is allowed")
    parser.add_argument("--accuracy-metric", choices=ACCURACY_METRICS,
                        help="how the deviation is measured: rel_l2 (default), max_abs, or top1 "
                        "(the share of samples whose top class changes)")


def duration(text: str) -> float:
    from tuner.config import budget

    try:
        return budget.parse(text, "--budget")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected {budget.FORMS}, got {text!r}") from None


def model_flags(parser: argparse.ArgumentParser, *, search: bool) -> None:
    """``--model PATH`` and the flags that go with it: a study config generated from a model file
    (:mod:`tuner.config.modelflags`)."""
    parser.add_argument("--model", metavar="PATH",
                        help="a .keras or .h5 (.hdf5) file or a SavedModel directory, measured "
                             "on inputs generated from its signature (instead of --config)")
    parser.add_argument("--data", metavar="FILE.py:FUNCTION",
                        help="with --model: your tf.data pipeline instead of generated inputs")
    parser.add_argument("--mode", choices=("predict", "train"),
                        help="with --model: predict (default), or train (a compiled .keras model)")
    parser.add_argument("--signature", metavar="NAME",
                        help="with a SavedModel: the signature called (default serving_default)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="with --model: samples per generated batch (default 32)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="with --model: an input's shape, e.g. image=1x224x224x3, for "
                             "dimensions the model leaves unknown (repeatable)")
    if search:
        parser.add_argument("--batch-sizes", metavar="N,N,...",
                            help="with --model: search the batch size among these, e.g. "
                                 "1,8,32,128 (reported with per-batch latency)")


MODEL_ONLY = ("data", "mode", "signature", "batch_size", "input_shape", "batch_sizes")


def keep_backups_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--keep-backups", type=nonneg_int, default=5, metavar="N",
                        help=f"a replaced {what} file is kept as NAME.<UTC time>.bak; keep the "
                             f"newest N such copies and remove older ones (default 5; 0 keeps "
                             f"none)")


def acceptance_flags(parser: argparse.ArgumentParser) -> None:
    """What a tuned file may hold beyond what a search writes, accepted explicitly."""
    parser.add_argument("--allow-env", action="append", default=[], metavar="NAME",
                        help="accept this variable in the file's settings.env although no tuner "
                             "knob sets it (repeatable); others are refused")
    parser.add_argument("--allow-unvalidated", action="store_true",
                        help="accept a file whose verdict is unvalidated (an interrupted "
                             "search's best trial, never validated against the defaults), or "
                             "whose evidence does not support its verdict")


class Ordered(argparse.Action):
    """Keeps files, --storage and --study-name in command-line order: the first result given is
    the reference, and a --storage applies to the --study-name options after it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        order = getattr(namespace, "order", None) or []
        kind = {"--storage": "storage", "--study-name": "study"}.get(option_string or "", "file")
        for value in values if isinstance(values, list) else [values]:
            order.append((kind, value))
        namespace.order = order


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a ratio >= 1 (e.g. 1.05), got {text!r}")
    return value


def cpu_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    counts = [int(p) if p.isascii() and p.isdigit() else 0 for p in parts]
    if not parts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of CPU counts >= 1 "
                                         f"(e.g. 1,2,4), got {text!r}")
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"a CPU count appears twice in {text!r}")
    return counts


def positive_number(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what} (a number > 0), got {text!r}")
        return value

    return parse
