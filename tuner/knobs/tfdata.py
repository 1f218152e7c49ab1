"""tf.data options, set on the dataset through ``tf.data.Options``."""

from __future__ import annotations

from typing import Any, Callable

from tuner.base.host import Machine
from tuner.errors import ConfigError
from tuner.knobs.base import Knob, _get, _int, _put


class TfDataKnob(Knob):
    """An attribute of ``tf.data.Options`` set on the user's dataset; in the tuned file under
    ``tf_data:`` at ``target``. ``optional``: searched by default only on TensorFlow builds that
    have it (the preflight reports which) and, with ``applies``, only for pipelines it can change
    (``applies(ops)``, the dataset's transformations)."""

    how = "tf.data.Options"
    in_process = True

    def __init__(self, name: str, *, option: str, target: str, optional: bool = False,
                 applies: Callable[[tuple[str, ...]], bool] | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.option = option              # the attribute path in tf.data.Options
        self.target = target              # the path under the tuned file's tf_data:
        self.optional = optional
        self.applies = applies

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        if not super().searched_by_default(machine, mode, pipeline):
            return False
        if self.optional and self.name not in (pipeline.options or ()):
            return False
        return self.applies is None or pipeline.ops is None or self.applies(pipeline.ops)

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and self.optional and self.name not in (pipeline.options or ()):
            raise ConfigError(f"{field}: the installed TensorFlow "
                              f"({machine.tf_version or 'version unknown'}) has no "
                              f"tf.data.Options().{self.option}; remove it")

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        data = tree.setdefault("tf_data", {})
        # optional options only when set (absent means TensorFlow's default), so files without
        # them read the same everywhere
        if value is not None or not self.optional:
            _put(data, self.target, value)

    def read(self, tree: dict[str, Any]) -> Any:
        return _get(tree.get("tf_data") or {}, self.target, self.default)

    def applied_by(self) -> str:
        return f"{self.how}: `{self.option}`"

    def _holder(self, options: Any) -> tuple[Any, str]:
        *parents, leaf = self.option.split(".")
        holder = options
        for attr in parents:
            holder = getattr(holder, attr, None)
        return holder, leaf

    def exists(self, options: Any) -> bool:
        holder, leaf = self._holder(options)
        return holder is not None and hasattr(holder, leaf)

    def tf_value(self, tf: Any, value: Any) -> Any:
        """``value`` as ``tf.data.Options`` takes it; raises LookupError when this TensorFlow
        has no such value."""
        return int(value) if _int(value) else value

    def set_option(self, tf: Any, options: Any, value: Any) -> str | None:
        """Set ``value`` on ``options``; what this TensorFlow lacks for it, or None."""
        if not self.exists(options):
            return self.option
        try:
            converted = self.tf_value(tf, value)
        except LookupError:
            return f"{self.option}={value}"
        holder, leaf = self._holder(options)
        setattr(holder, leaf, converted)
        return None

    def in_effect(self, options: Any) -> Any:
        """The value ``options`` carry (None: TensorFlow's default; an enum by its name)."""
        value: Any = options
        for attr in self.option.split("."):
            value = getattr(value, attr, None)
        return getattr(value, "name", value)


class AutotuneAlgorithmKnob(TfDataKnob):
    """The autotuner's algorithm: an enum whose members differ between TensorFlow versions."""

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and pipeline.algorithms is not None \
                and value not in pipeline.algorithms:
            raise ConfigError(f"{field}: {value!r} is not an autotune algorithm of the installed "
                              f"TensorFlow; allowed: {', '.join(pipeline.algorithms)}")

    def tf_value(self, tf: Any, value: Any) -> Any:
        members = algorithms_of(tf)
        if members is None or value not in members.__members__:
            raise LookupError(value)
        return members[value]


def algorithms_of(tf: Any) -> Any:
    """``tf.data.experimental.AutotuneAlgorithm``, or None where this TensorFlow lacks it."""
    return getattr(getattr(tf.data, "experimental", None), "AutotuneAlgorithm", None)
