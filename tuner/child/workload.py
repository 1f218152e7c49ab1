"""Loading the user's builders and turning them into a step function and a stream of batches.

Declared knobs: every builder that accepts a knob (by name or ``**kwargs``) is called with the
trial's value (``autotune`` as ``tf.data.AUTOTUNE``); the preflight checks the signatures before
anything is built and reports each knob's baseline (the builder's own default).

TensorFlow is imported when a :class:`Workload` is built, never by importing this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import tuner.knobs as knobs
from tuner.child import guard
from tuner.child.model import Loaded
from tuner.child.protocol import Progress, WorkloadProblem, describe
from tuner.knobs import settings as settings_mod


def _load_callable(spec: str, base_dir: str, role: str, *, base_first: bool = True
                   ) -> Callable[..., Any]:
    """The function ``spec`` names (``file.py:fn`` or ``module:fn``). A module is looked up in
    ``base_dir`` (the config's folder) first, or, with ``base_first`` false, only after
    everything else on ``sys.path``: the generated config of a model-file search lives in
    ``results/<name>``, a folder of results, not of code, so nothing there may shadow a module
    of the user's (``python -m`` already put the working directory first)."""
    target, func_name = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            file = Path(target) if Path(target).is_absolute() else Path(base_dir) / target
            module_name = "tuner_workload_" + str(abs(hash(str(file.resolve()))))
            module = sys.modules.get(module_name)
            if module is None:
                sys.path.insert(0, str(file.parent))  # so the workload can import its neighbours
                module_spec = importlib.util.spec_from_file_location(module_name, file)
                if module_spec is None or module_spec.loader is None:
                    raise WorkloadProblem(f"workload.{role}: cannot load {str(file)!r} as Python")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[module_name] = module
                module_spec.loader.exec_module(module)
        else:
            if base_first:
                sys.path.insert(0, base_dir)
            elif base_dir not in sys.path:
                sys.path.append(base_dir)
            module = importlib.import_module(target)
    except WorkloadProblem:
        raise
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from user code too
        raise WorkloadProblem(f"workload.{role}: importing {target!r} raised "
                              f"{describe(exc)}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise WorkloadProblem(f"workload.{role}: {target!r} has no function {func_name!r}")
    if not callable(func):
        raise WorkloadProblem(f"workload.{role}: {spec!r} is a {type(func).__name__}, "
                              f"not a function")
    return func


def _call_builder(func: Callable[..., Any], role: str, spec: str,
                  kwargs: dict[str, Any] | None = None) -> Any:
    try:
        return func(**(kwargs or {}))
    except BaseException as exc:
        raise WorkloadProblem(f"workload.{role}: {spec} raised {describe(exc)}") from exc


_NO_DEFAULT = object()


def _parameters(func: Callable[..., Any], role: str, spec: str) -> tuple[dict[str, Any], bool]:
    """A builder's keyword parameters (name -> default, or _NO_DEFAULT) and whether it takes
    ``**kwargs``."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise WorkloadProblem(f"workload.{role}: cannot read the signature of {spec}: "
                              f"{describe(exc)}") from exc
    named: dict[str, Any] = {}
    var_keyword = False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            named[p.name] = _NO_DEFAULT if p.default is p.empty else p.default
    return named, var_keyword


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class KnobPlan:
    """Which builder receives which declared knob: every builder that accepts it, by name or
    through ``**kwargs``. Checked before any builder runs, so a knob no builder takes, or a
    builder argument that is no declared knob and has no default, fails the preflight at once."""

    def __init__(self, builders: dict[str, tuple[Callable[..., Any], str]],
                 declared: list[str]) -> None:
        self.accepts: dict[str, list[str]] = {name: [] for name in declared}
        self.defaults: dict[str, dict[str, Any]] = {}
        for role, (func, spec) in builders.items():
            named, var_keyword = _parameters(func, role, spec)
            self.defaults[role] = named
            for name, default in named.items():
                if default is _NO_DEFAULT and name not in self.accepts:
                    hint = ("declare it under knobs: with its candidate values, or give it a "
                            "default" if name.isidentifier() else "give it a default")
                    raise WorkloadProblem(f"workload.{role}: {spec} has a required argument "
                                          f"{name!r} that is not a declared knob; {hint}")
            for name in declared:
                if name in named or var_keyword:
                    self.accepts[name].append(role)
        for name, roles in self.accepts.items():
            if not roles:
                specs = " nor ".join(spec for _, spec in builders.values())
                raise WorkloadProblem(f"knobs.{name}: declared, but {specs} accepts no argument "
                                      f"{name!r} (nor **kwargs); add a keyword argument "
                                      f"{name}=... to the builder that should receive it, or "
                                      f"remove the knob")

    def baseline(self, candidates: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
        """Each knob's baseline: the pipeline as written, i.e. the default of the first builder
        that names it (data before model); the first listed candidate when none gives one."""
        info: dict[str, dict[str, Any]] = {}
        for name, roles in self.accepts.items():
            default = next((self.defaults[r][name] for r in roles
                            if self.defaults[r].get(name, _NO_DEFAULT) is not _NO_DEFAULT),
                           _NO_DEFAULT)
            if default is _NO_DEFAULT or not _json_scalar(default):
                base, source = candidates[name][0], "first candidate"
            else:
                base, source = default, "builder default"
                # tf.data.AUTOTUNE written as a default is the listed "autotune"
                if base == -1 and not isinstance(base, bool) and knobs.AUTOTUNE in candidates[name]:
                    base = knobs.AUTOTUNE
            info[name] = {"builders": roles, "baseline": base, "source": source}
        return info

    def kwargs(self, role: str, values: dict[str, Any], tf: Any) -> dict[str, Any]:
        return {name: knobs.DeclaredKnob.to_tf(value, tf)
                for name, value in values.items() if role in self.accepts.get(name, ())}


def _first_leaf(x: Any, tf: Any) -> Any:
    leaves = tf.nest.flatten(x)
    return leaves[0] if leaves else None


def _inputs(element: Any) -> Any:
    """The model input of a batch: ``x`` or the first item of ``(x, ...)``."""
    return element[0] if isinstance(element, (tuple, list)) else element


def _batch_size(element: Any, tf: Any) -> int:
    leaf = _first_leaf(_inputs(element), tf)
    shape = getattr(leaf, "shape", None)
    if shape is None or len(shape) == 0:
        raise WorkloadProblem("workload.data: the first element's inputs are scalars; build_data "
                              "must return batches (call .batch(n) on the dataset)")
    size = shape[0]
    if size is None:
        size = int(tf.shape(leaf)[0])
    return int(size)


def _check_element(element: Any, mode: str, spec: str) -> None:
    if mode == "train" and not (isinstance(element, (tuple, list)) and len(element) in (2, 3)):
        kind = type(element).__name__
        raise WorkloadProblem(f"workload.data: mode train needs batches of (x, y) or "
                              f"(x, y, sample_weight); {spec} yields {kind} elements")


def _tf_data_options(tf: Any, settings: dict[str, Any]) -> Any:
    options, missing = settings_mod.dataset_options(tf, settings)
    if missing:
        raise WorkloadProblem(f"this TensorFlow ({tf.__version__}) has no tf.data option "
                              f"{', '.join(missing)}")
    return options


def _options_in_effect(dataset: Any) -> dict[str, Any]:
    """The tf.data knobs as the dataset really carries them (None: TensorFlow's default)."""
    return settings_mod.options_in_effect(dataset)


def _pipeline_ops(dataset: Any) -> list[str] | None:
    """The dataset's transformations, source first (``["Range", "Map", "Batch"]``), from the
    Python dataset objects (nothing is serialised); None when this TensorFlow's classes cannot
    be walked."""
    ops: list[str] = []

    def walk(node: Any, depth: int) -> None:
        if depth > 200:
            raise RecursionError
        for parent in node._inputs():
            walk(parent, depth + 1)
        name = type(node).__name__.lstrip("_").removesuffix("Dataset")
        if name != "Options":
            ops.append(name)

    try:
        walk(dataset, 0)
    except Exception:  # private attributes: unknown means every rewrite may apply
        return None
    return ops


def onednn_enabled() -> bool | None:
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # a private module: vendor builds may lack it, and that is not an error
        return None


def xla_state() -> dict[str, Any]:
    """XLA in this process: ``TF_XLA_FLAGS`` as TensorFlow reads it (once, on first use),
    whether it turns auto-clustering on for CPU (a level of 1 or 2 and
    ``--tf_xla_cpu_global_jit``: without it nothing is clustered on CPU), and whether this
    build registers XLA's JIT ops (None: unknown)."""
    flags = os.environ.get("TF_XLA_FLAGS")
    level = re.search(r"--tf_xla_auto_jit=(-?\d+)", flags or "")
    try:
        from tensorflow.python.framework import op_def_registry

        available: bool | None = op_def_registry.get("_XlaCompile") is not None
    except Exception:  # a private module: vendor builds may lack it, and that is not an error
        available = None
    return {"flags": flags, "auto_jit": int(level.group(1)) if level else None,
            "active": bool(level and level.group(1) in ("1", "2")
                           and "--tf_xla_cpu_global_jit" in (flags or "")),
            "available": available}


# Every workload a worker builds stays referenced until os._exit: dropping the last reference to a
# tf.data iterator cancels its pipeline and joins its threads, which took about 5 s in most trials
# of the benchmark examples (measured as "other" time after the last window). Nothing needs that
# clean-up, since the process ends right after the result is written.
_KEEP_ALIVE: list[Any] = []


class Workload:
    """The user's model, data and the step function one measurement repeats."""

    def __init__(self, task: dict[str, Any], progress: Progress, timings: dict[str, float],
                 on_phase: Callable[[str], None] | None = None) -> None:
        """``on_phase(name)`` runs as each phase begins (diagnose counts the threads each
        phase starts)."""
        on_phase = on_phase or (lambda phase: None)
        wl = task["workload"]
        settings = task["settings"]
        self.mode = wl["mode"]
        self.wl = wl
        # the accuracy guard's task: builders are seeded so every process has the same weights
        self.guard_task: dict[str, Any] | None = task.get("guard")
        self.loaded: Loaded | None = None     # a model file, when the workload names one
        self.generated = bool(wl.get("model_format")) and wl.get("data") is None
        phases: tuple[tuple[str, Callable[[], None]], ...] = (
            ("import", lambda: self._start_tensorflow(settings)),
            ("build_model", lambda: self._build_model(wl, task.get("knobs") or {}, settings)),
            ("build_data", lambda: self._build_data(wl, settings)),
        )
        for name, run in phases:
            t = time.perf_counter()
            progress.emit(phase=name)
            on_phase(name)
            run()
            timings[name] = time.perf_counter() - t
        self.step = self._make_step()
        _KEEP_ALIVE.append(self)

    def _start_tensorflow(self, settings: dict[str, Any]) -> None:
        import tensorflow as tf

        self.tf = tf
        # Must happen before the first op initialises the runtime, as tuner.apply() does it.
        settings_mod.apply_threading(tf, settings)
        # reduced precision set inside the process (graph rewrite, Keras policy), before building
        settings_mod.apply_precision(tf, settings)

    def _build_model(self, wl: dict[str, Any], declared: dict[str, list[Any]],
                     settings: dict[str, Any]) -> None:
        """Load the builders, check which takes which declared knob, and build the model (or
        load the model file)."""
        tf = self.tf
        builders = {}
        if wl.get("data") is not None:
            builders["data"] = (_load_callable(wl["data"], wl["base_dir"], "data",
                                               base_first=not wl.get("model_format")),
                                wl["data"])
        if wl.get("model_format"):
            self.loaded = Loaded(tf, wl)
        elif self.mode != "data":
            builders["model"] = (_load_callable(wl["model"], wl["base_dir"], "model"), wl["model"])
        self.builders = builders
        values = knobs.declared(settings)
        self.plan = KnobPlan(builders, sorted(set(declared) | set(values)))
        self.knob_info = self.plan.baseline(declared) if declared else {}
        # the preflight builds the baseline: the pipeline as written
        for name, info in self.knob_info.items():
            values.setdefault(name, info["baseline"])
        self.knobs = values
        self.model = self.loaded.keras_model if self.loaded is not None else None
        if self.mode != "data" and self.loaded is None:
            self.model = self._call_model_builder()
            self._check_model(wl["model"])

    def _call_model_builder(self) -> Any:
        func, spec = self.builders["model"]
        if self.guard_task is not None:
            import keras

            keras.utils.set_random_seed(guard.SEED)
        return _call_builder(func, "model", spec, self.plan.kwargs("model", self.knobs, self.tf))

    def _build_data(self, wl: dict[str, Any], settings: dict[str, Any]) -> None:
        """Build the dataset with the trial's tf.data options and read its first batch."""
        tf = self.tf
        if self.generated:
            assert self.loaded is not None
            batch = knobs.BATCH_SIZE.batch(settings, wl["batch_size"])
            dataset = self.loaded.dataset(batch, wl.get("input_shapes") or {})
        else:
            func, spec = self.builders["data"]
            dataset = _call_builder(func, "data", spec, self.plan.kwargs("data", self.knobs, tf))
        if not isinstance(dataset, tf.data.Dataset):
            raise WorkloadProblem(f"workload.data: {wl['data']} returned {type(dataset).__name__}, "
                                  f"expected a tf.data.Dataset")
        self.pipeline = _pipeline_ops(dataset)
        dataset = dataset.with_options(_tf_data_options(tf, settings))
        self.options_in_effect = _options_in_effect(dataset)
        self.dataset = dataset
        self.iterator = iter(dataset.repeat())
        try:
            first = next(self.iterator)
        except StopIteration:
            raise WorkloadProblem(f"workload.data: {wl['data']} returned an empty "
                                  f"dataset") from None
        except Exception as exc:
            raise WorkloadProblem(f"workload.data: reading the first batch raised "
                                  f"{describe(exc)}") from exc
        if self.generated:
            self.batch_size = batch
        else:
            _check_element(first, self.mode, wl["data"])
            self.batch_size = _batch_size(first, tf)
        self.element_spec = str(dataset.element_spec)[:500]
        self.first = first

    def _check_model(self, spec: str) -> None:
        tf = self.tf
        model = self.model
        classes = [tf.keras.Model]
        try:
            import keras

            classes.append(keras.Model)
        except ImportError:
            pass
        if not isinstance(model, tuple(classes)):
            raise WorkloadProblem(f"workload.model: {spec} returned {type(model).__name__}, "
                                  f"expected a Keras model")
        if self.mode == "train" and getattr(model, "optimizer", None) is None:
            raise WorkloadProblem(f"workload.model: mode train needs a compiled model; {spec} "
                                  f"returned one without an optimizer (call model.compile(...))")

    def _make_step(self) -> Callable[[Any], Any]:
        tf = self.tf
        self.forward: Callable[[Any], Any] | None = None   # model inputs -> outputs (predict)
        if self.loaded is not None:
            step = self.loaded.step()
            if self.mode == "predict":
                self.forward = step
            return step if self.generated or self.mode == "train" \
                else (lambda batch: step(_inputs(batch)))
        if self.mode == "data":
            return lambda batch: None
        model = self.model
        if self.mode == "predict":
            forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self.forward = forward
            return lambda batch: forward(_inputs(batch))
        train = tf.function(model.train_step, reduce_retracing=True)
        return lambda batch: train(tuple(batch))

    def run_step(self, batch: Any) -> None:
        try:
            self.step(batch)
        except Exception as exc:
            raise WorkloadProblem(f"the {self.mode} step raised {describe(exc)}") from exc

    def next_batch(self) -> Any:
        try:
            return next(self.iterator)
        except Exception as exc:
            raise WorkloadProblem(f"workload.data: reading a batch raised "
                                  f"{describe(exc)}") from exc


    # -- the accuracy guard (tuner/guard.py) ------------------------------------------------------

    def _guarded_part(self, element: Any) -> Any:
        """What the guard feeds: the model inputs (predict), the whole (x, y) batch (train)."""
        return element if self.generated or self.mode == "train" else _inputs(element)

    def guard_reference(self) -> dict[str, Any] | None:
        """The reference child: save N samples of the data and the outputs on them."""
        task = self.guard_task
        if task is None or self.mode == "data" or (self.mode == "train" and not task.get("train")):
            return None
        tf = self.tf
        parts = (self._guarded_part(b) for b in iter(self.dataset))
        try:
            got = guard.collect(tf, parts, int(task["samples"]))
        except Exception as exc:
            raise WorkloadProblem(f"accuracy guard: reading {task['samples']} samples raised "
                                  f"{describe(exc)}") from exc
        if got is None:
            return {"skipped": "an input has no batch dimension"}
        leaves, count = got
        batch = max(1, min(self.batch_size, count))
        outs = self._guard_outputs(leaves, batch)
        guard.save(task["reference"], leaves, outs, batch)
        return {"samples": count, "batch": batch,
                "outputs": [list(o.shape) for o in outs]}

    def guard_check(self) -> dict[str, Any] | None:
        """A candidate child: the deviation of its outputs on the reference's samples."""
        task = self.guard_task
        if task is None or self.mode == "data" or (self.mode == "train" and not task.get("train")):
            return None
        from pathlib import Path

        if not Path(task["reference"]).is_file():
            return None
        leaves, ref, batch = guard.load(task["reference"])
        try:
            outs = self._guard_outputs(leaves, batch)
        except WorkloadProblem:
            raise
        except Exception as exc:
            return {"error": f"the guard's samples raised {describe(exc)}"}
        return {**guard.deviation(outs, ref), "samples": int(leaves[0].shape[0]), "batch": batch}

    def _guard_outputs(self, leaves: list[Any], batch: int) -> list[Any]:
        tf = self.tf
        structure = self._guarded_part(self.first)
        if self.mode == "train":
            return [self._guard_train(structure, leaves, batch)]
        assert self.forward is not None
        return guard.outputs(tf, self.forward, structure, leaves, batch)

    def _guard_train(self, structure: Any, leaves: list[Any], batch: int) -> Any:
        """The loss after guard.TRAIN_STEPS passes over the samples, from a seeded start: a
        model built (or loaded) again, so the trial's own training does not count."""
        import keras
        import numpy as np

        tf = self.tf
        keras.utils.set_random_seed(guard.SEED)
        model = Loaded(tf, self.wl).keras_model if self.loaded is not None \
            else self._call_model_builder()
        train = tf.function(model.train_step, reduce_retracing=True)
        loss = None
        count = int(leaves[0].shape[0])
        for _ in range(guard.TRAIN_STEPS):
            for start in range(0, count, batch):
                piece = [tf.constant(leaf[start:start + batch]) for leaf in leaves]
                logs = train(tuple(tf.nest.pack_sequence_as(structure, piece)))
                loss = logs["loss"] if isinstance(logs, dict) else logs
        return np.asarray([float(np.asarray(loss))], dtype=np.float64)

    def samples(self, batch: Any) -> int:
        """How many samples ``batch`` holds."""
        if self.generated:
            return self.batch_size
        return _batch_size(batch, self.tf)

    def model_params(self) -> int | None:
        if self.loaded is not None:
            return self.loaded.params()
        return int(self.model.count_params()) if self.model is not None else None
