"""Declared knobs: the user's builder arguments (``knobs:`` in the config), named
``knobs.<argument>``."""

from __future__ import annotations

from typing import Any

from tuner.base.host import Machine
from tuner.knobs.base import Knob, text

KNOB_PREFIX = "knobs."     # declared knobs: Optuna parameter "knobs.map_parallelism"
AUTOTUNE = "autotune"     # a declared knob's value that arrives as tf.data.AUTOTUNE


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class DeclaredKnob(Knob):
    """A keyword argument of the user's builders (``knobs:`` in the config), passed to every
    builder that takes it; ``autotune`` arrives as ``tf.data.AUTOTUNE``. The tuned file keeps
    the values as searched under ``knobs:``."""

    how = "builder argument"

    def __init__(self, argument: str, candidates: list[Any] | None = None) -> None:
        values = list(candidates or [])
        super().__init__(KNOB_PREFIX + argument, default=values[0] if values else None,
                         allowed=f"numbers, strings, true, false, null and {AUTOTUNE} "
                                 f"(tf.data.AUTOTUNE)",
                         valid=_plain, candidates=lambda m: list(values),
                         help="declared in the config's knobs:", label=argument)
        self.argument = argument

    @staticmethod
    def owns(name: str) -> bool:
        return name.startswith(KNOB_PREFIX)

    def shown(self, value: Any) -> str:
        return text(value)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree.setdefault("knobs", {})[self.argument] = flat[self.name]

    def read(self, tree: dict[str, Any]) -> Any:
        return (tree.get("knobs") or {}).get(self.argument)

    @staticmethod
    def to_tf(value: Any, tf: Any) -> Any:
        """The value a builder receives."""
        return tf.data.AUTOTUNE if value == AUTOTUNE else value


def declared(flat: dict[str, Any]) -> dict[str, Any]:
    """The declared knobs of ``flat`` by argument name: ``{"map_parallelism": 2}``."""
    return {name[len(KNOB_PREFIX):]: value for name, value in flat.items()
            if DeclaredKnob.owns(name)}
