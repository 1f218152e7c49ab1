"""The batch size a model is fed with (searched only when the config lists several)."""

from __future__ import annotations

from typing import Any

from tuner.base.host import Machine
from tuner.errors import ConfigError
from tuner.knobs.base import Knob, pos_int


class BatchSizeKnob(Knob):
    """The batch a model file is fed, for workloads whose inputs tuner generates (a model file
    without ``data:``); searched only when asked (``--batch-sizes``, ``space: {batch_size:
    [...]}``). Its default, null, is the workload's own batch size (``--batch-size``,
    ``workload.batch_size``). In production the batch is the caller's: ``tuner.apply()`` cannot
    set it, so the tuned file keeps it at the top of ``settings`` (only when set) for the job or
    the server's batching to use (``Applied.batch_size``)."""

    how = "the caller: batches of this size"
    in_process = True
    screened = True

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        return False

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and getattr(pipeline, "batch_size", None) is None:
            raise ConfigError(f"{field}: {value!r}: the batch size is searched only for a model "
                              f"file whose inputs tuner generates (workload.model: a .keras, .h5 "
                              f"or SavedModel, without data:); a dataset's batches fix their "
                              f"own size")

    def baseline(self, pipeline: Any) -> Any:
        return getattr(pipeline, "batch_size", None)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        if value is not None:
            tree[self.name] = value

    def read(self, tree: dict[str, Any]) -> Any:
        return tree.get(self.name, self.default)

    def note(self, tree: Any) -> str | None:
        value = tree.get(self.name)
        if not pos_int(value):
            return None
        return (f"batch size {value}: the caller's choice, which tuner.apply() cannot set; send "
                f"batches of {value} (cfg.batch_size), or with TF Serving set max_batch_size "
                f"{value} in --batching_parameters_file")

    def applied_by(self) -> str:
        return "the caller (`cfg.batch_size`; TF Serving: `max_batch_size`)"

    def batch(self, flat: dict[str, Any], workload_batch: int) -> int:
        """The batch a trial with ``flat`` feeds the model."""
        value = flat.get(self.name)
        return int(value) if value is not None else int(workload_batch)
