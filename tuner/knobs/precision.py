"""Reduced-precision knobs set inside the TensorFlow process (behind the accuracy guard)."""

from __future__ import annotations

from typing import Any

from tuner.base.host import Machine
from tuner.knobs.base import Knob

PRECISION_REWRITE = "precision.auto_mixed_precision_onednn_bfloat16"


class PrecisionKnob(Knob):
    """Reduced precision set inside the TensorFlow process (by ``tuner.apply()`` and the trial
    child; the environment cannot carry it): TensorFlow's oneDNN bfloat16 auto-mixed-precision
    graph rewrite (``tf.config.optimizer``), or Keras's global dtype policy for a model a builder
    makes. In the tuned file under ``precision:``."""

    in_process = True

    def __init__(self, name: str, *, applied: str, needs_onednn: bool = False,
                 declared_only: bool = False, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.how = applied
        self.needs_onednn = needs_onednn      # acts only where oneDNN's kernels run
        self.declared_only = declared_only    # searched only when the config lists it
        self.key = name.split(".", 1)[1]

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        if self.declared_only or (self.needs_onednn and machine.onednn_default is not True):
            return False
        return super().searched_by_default(machine, mode, pipeline)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        if value is not None:    # absent means off, so files without it read as before
            tree.setdefault("precision", {})[self.key] = value

    def read(self, tree: dict[str, Any]) -> Any:
        return (tree.get("precision") or {}).get(self.key, self.default)

    def set(self, tf: Any, value: Any) -> None:
        """Apply ``value`` in this TensorFlow process (before the model is built)."""
        if value is None:
            return
        if self.name == PRECISION_REWRITE:
            tf.config.optimizer.set_experimental_options({self.key: bool(value)})
        else:
            import keras

            keras.mixed_precision.set_global_policy(value)
