"""TensorFlow's op thread pools: ``tf.config.threading`` before the runtime starts."""

from __future__ import annotations

from typing import Any

from tuner.base.host import Machine
from tuner.knobs.base import Knob, nonneg_int, text


class ThreadKnob(Knob):
    """A TensorFlow op thread pool: ``tf.config.threading`` before the runtime starts; a process
    started by the launcher also gets the variable TensorFlow reads by itself."""

    how = "tf.config.threading"
    in_process = True

    def __init__(self, name: str, *, variable: str, setter: str, getter: str,
                 **kwargs: Any) -> None:
        super().__init__(name, default=0, valid=nonneg_int, always_shown=True,
                         allowed="an integer >= 0 (0 = TensorFlow's default), 'default'", **kwargs)
        self.variable = variable
        self.setter = setter
        self.getter = getter
        self.controls = (variable,)

    def shown(self, value: Any) -> str:
        return "-" if value is None or value == 0 else text(value)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = flat.get(self.name, self.default)

    def read(self, tree: dict[str, Any]) -> Any:
        return tree.get(self.name, self.default)

    def environment(self, value: Any) -> dict[str, str]:
        return {self.variable: str(value)} if value else {}

    def current(self, tf: Any) -> int:
        return int(getattr(tf.config.threading, self.getter)())

    def set(self, tf: Any, value: int) -> None:
        """Raises RuntimeError once the runtime has started with other counts."""
        getattr(tf.config.threading, self.setter)(int(value))

    def applied_by(self) -> str:
        return f"{self.how}: `{self.setter}`; `{self.variable}` under the launcher"

    def by_hand(self, value: int) -> str:
        """How a job sets it itself."""
        return (f"tf.config.threading.{self.setter}({value}) before the first op, "
                f"or {self.variable}={value}")
