"""The search space: the knob registry x the machine x the config's overrides x what the preflight
learnt -> the knobs a study searches (with their candidates) and those it fixes, and the reference
points every study measures (TensorFlow's defaults, the expert rule).

Settings are flat dicts keyed by knob name; see :mod:`tuner.knobs` for the knobs themselves and
:mod:`tuner.knobs.settings` for what a chosen configuration becomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner.base.host import Machine
from tuner.errors import ConfigError
from tuner.knobs import KNOB_PREFIX, KNOBS, PRECISION, check_overrides, default_settings


def expert_settings(machine: Machine) -> dict[str, Any]:
    """The common rule of thumb (Intel's guide): intra-op = physical cores, inter-op = sockets
    (or 2 on a single socket); everything else left to TensorFlow."""
    settings = default_settings()
    settings["intra_op_parallelism_threads"] = machine.physical_cores
    settings["inter_op_parallelism_threads"] = machine.sockets if machine.sockets > 1 else 2
    return settings


@dataclass(frozen=True)
class Pipeline:
    """What the preflight child learnt about the installed TensorFlow and the user's pipeline.
    A ``None`` field is unknown: optional tf.data options are then not searched by default (as
    OpenMP knobs on a build not known to use OpenMP), and every rewrite counts as applicable."""

    options: tuple[str, ...] | None = None     # optional TF_DATA knobs this TensorFlow has
    algorithms: tuple[str, ...] | None = None  # the AutotuneAlgorithm members it has
    ops: tuple[str, ...] | None = None         # the dataset's transformations, source first
    knobs: dict[str, Any] = field(default_factory=dict)   # declared knob -> its baseline value
    # the batch of a workload whose inputs tuner generates (a model file without data); None
    # when the dataset's own batches fix it
    batch_size: int | None = None

    @classmethod
    def from_preflight(cls, result: dict[str, Any]) -> Pipeline:
        def names(key: str) -> tuple[str, ...] | None:
            value = result.get(key)
            return tuple(value) if isinstance(value, list) else None

        knobs = {name: info["baseline"] for name, info in (result.get("knobs") or {}).items()}
        batch = result.get("batch_size") if result.get("generated_inputs") else None
        return cls(options=names("tf_data_options"), algorithms=names("autotune_algorithms"),
                   ops=names("pipeline"), knobs=knobs, batch_size=batch)


@dataclass(frozen=True)
class Space:
    """What a study searches: candidate lists for searched knobs, fixed values for the rest, and
    the baseline value of each declared knob (the builder's own default, see
    :func:`build_space`)."""

    searched: dict[str, list[Any]]
    fixed: dict[str, Any]
    knob_baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        size = 1
        for values in self.searched.values():
            size *= len(values)
        return size

    def describe(self) -> dict[str, Any]:
        return {"searched": {k: list(v) for k, v in self.searched.items()},
                "fixed": dict(self.fixed)}

    def baseline(self) -> dict[str, Any]:
        """TensorFlow's defaults, and the user's pipeline as written."""
        return {**default_settings(), **self.knob_baseline}

    def expert(self, machine: Machine) -> dict[str, Any]:
        """The expert rule; declared knobs keep the pipeline as written."""
        return {**expert_settings(machine), **self.knob_baseline}

    def settings(self, sampled: dict[str, Any]) -> dict[str, Any]:
        settings = self.baseline()
        settings.update(self.fixed)
        settings.update(sampled)
        return settings


def build_space(machine: Machine, overrides: dict[str, Any], where: str = "space",
                mode: str = "predict", pipeline: Pipeline | None = None,
                knobs: dict[str, list[Any]] | None = None, precision: bool = False) -> Space:
    """The default space for ``machine`` with the config's ``space`` section applied.

    An override is a list (narrow the candidates), a single value (fix the knob) or ``default``
    (remove it from the search: TensorFlow's default is used). TensorFlow's default and the expert
    rule's value stay candidates of every searched knob, because the baseline and expert trials are
    points of the same space.

    Optional tf.data options are searched by default only where the installed TensorFlow has them
    and, for graph rewrites, where the pipeline has what they rewrite (``pipeline``). Declared
    ``knobs`` are always searched, over their listed values in the listed order plus their
    baseline value (the builder's own default) when it is not listed.

    Knobs that change the model's numbers (reduced precision) are searched, or may be set, only
    with ``precision`` (an accuracy tolerance, and in train mode ``accuracy.train``).
    """
    pipeline = pipeline or Pipeline()
    overrides = check_overrides(overrides, where)
    references = [default_settings(), expert_settings(machine)]
    searched: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for name, knob in KNOBS.items():
        if knob.changes_numbers and not precision:
            asked = overrides.get(name, knob.default)
            if any(v != knob.default for v in (asked if isinstance(asked, list) else [asked])):
                train = "; in train mode also accuracy.train: true" if mode == "train" else ""
                raise ConfigError(f"{where}.{name}: {asked!r} changes the model's numbers; it is "
                                  f"searched only with an accuracy tolerance (accuracy: "
                                  f"{{tolerance: 0.05}} or --accuracy-tolerance 0.05{train}), "
                                  f"or remove it")
            fixed[name] = knob.default
            continue
        if name not in overrides:
            available = knob.searched_by_default(machine, mode, pipeline)
            values = knob.candidates(machine) if available else [knob.default]
        elif isinstance(overrides[name], list):
            values = list(overrides[name])
            for v in values:
                knob.check_available(v, machine, mode, pipeline, f"{where}.{name}")
        else:
            knob.check_available(overrides[name], machine, mode, pipeline, f"{where}.{name}")
            fixed[name] = overrides[name]
            continue
        for ref in references:
            if ref[name] not in values:
                values.append(ref[name])
        unique: list[Any] = []
        for v in values:
            if v not in unique:
                unique.append(v)
        if len(unique) > 1:
            searched[name] = sorted(unique, key=_sort_key)
        else:
            fixed[name] = unique[0]
    baseline: dict[str, Any] = {}
    for name, knob in KNOBS.items():
        # a searched knob whose baseline is the workload's own value (the batch size of a model
        # file) measures that value, not a default standing for it
        base = knob.baseline(pipeline)
        if name in searched and base != knob.default:
            values = [base if v == knob.default else v for v in searched[name]]
            searched[name] = sorted(dict.fromkeys(values), key=_sort_key)
            baseline[name] = base
    for name, candidates in (knobs or {}).items():
        key = KNOB_PREFIX + name
        base = pipeline.knobs.get(name, candidates[0])
        values = list(candidates)
        if not any(same_value(base, v) for v in values):
            values.append(base)
        baseline[key] = next(v for v in values if same_value(base, v))
        if len(values) > 1:
            searched[key] = values
        else:
            fixed[key] = values[0]
    return Space(searched=searched, fixed=fixed, knob_baseline=baseline)


def precision_levers(machine: Machine, mode: str) -> list[str]:
    """The reduced-precision knobs this machine's CPU could use (searched only with an accuracy
    tolerance): the opening lines name them, with how to opt in."""
    return [k.name for k in PRECISION
            if k.searched_by_default(machine, mode, Pipeline()) or (
                getattr(k, "declared_only", False) and set(k.cpu_flags) & machine.cpu_flags)]


def same_value(a: Any, b: Any) -> bool:
    """Equal as knob values: ``1`` is not ``True`` nor ``1.0``, as they reach a builder."""
    return type(a) is type(b) and a == b


def _sort_key(value: Any) -> tuple[int, Any]:
    # None (TensorFlow's default) first, then numbers / strings in order.
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (2, value)
    return (1, value)
