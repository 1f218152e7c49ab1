"""What every command's output goes through: text made safe for a terminal, stdout that may be a
closed pipe, Optuna kept quiet."""

from __future__ import annotations

import sys


def _terminal(text: str) -> str:
    from tuner.base.render import terminal

    return terminal(text)


def _out(text: str) -> None:
    """Every printout of a command goes out through here: a value from a file, a study or a
    model that slipped past its printer's escaping still cannot act on the terminal."""
    sys.stdout.write(_terminal(text))


def quiet_optuna() -> None:
    """Optuna's log lines ("There are no complete trials.") would only repeat what these commands
    print; the commands are the process's last act, so a global setting is fine here."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
