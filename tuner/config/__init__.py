"""The study config file: parse, check every field, fill defaults, apply CLI overrides.

Everything is checked before any trial runs, and every error names the file, the field, the bad
value and what is allowed. The result is a frozen :class:`Config`; nothing mutates it afterwards.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import re
from pathlib import Path
from typing import Any

from tuner.base import yamlsafe
from tuner.base.yamlsafe import shown
from tuner.config import budget as budget_mod
from tuner.config.fields import (
    _bool,
    _builder,
    _float,
    _int,
    _number,
    _section,
    _where,
    check_keys,
    choice,
    ratio,
)
from tuner.config.sections import (
    ACCURACY_METRICS,
    GUARD_SAMPLES,
    MODES,
    OBJECTIVES,
    SAMPLERS,
    Accuracy,
    Config,
    Measure,
    Objective,
    Search,
    Validate,
    Workload,
)
from tuner.errors import ConfigError
from tuner.knobs import AUTOTUNE, BATCH_SIZE, PRECISION_POLICY, SECTIONS, check_overrides

TOP_KEYS = ("workload", "search", "measure", "validate", "space", "knobs", "objective", "study",
            "output", "accuracy")
STUDY_KEYS = ("name", "storage")
STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


SEARCH_RULES = {
    "n_trials": _int(1), "max_trials": _int(1, allow_none=True),
    "timeout": _float(0, allow_none=True, strictly_above=True),
    "budget": lambda v, w: None if v is None else budget_mod.parse(v, w),
    "trial_timeout": _float(0, strictly_above=True),
    "sampler": lambda v, w: choice(v, SAMPLERS, w), "seed": _int(0, allow_none=True),
    "pruning": _bool,
    "prune_ratio": lambda v, w: ratio(v, w),
    "heartbeat_interval": _int(1), "grace_period": _int(1),
    "allow_other_machines": _bool,
}
MEASURE_RULES = {
    "warmup_seconds": _float(0), "min_warmup_steps": _int(1),
    "window_seconds": _float(0, strictly_above=True), "windows": _int(2),
}
VALIDATE_RULES = {
    # Validation always measures at least the best trial against the defaults.
    "candidates": _int(1), "screen_rounds": _int(1),
    # An exact permutation test on n=m rounds cannot reach p < 0.05 below 4 rounds each.
    "rounds": _int(4), "max_rounds": _int(4), "looks": _int(1),
    "alpha": lambda v, w: ratio(v, w),
    "min_speedup": _float(1.0),
}


def _flatten_space(data: Any, path: Path) -> dict[str, Any]:
    """``space: {tf_data: {private_threadpool_size: [...]}}``
    -> ``{"tf_data.private_...": [...]}``."""
    data = check_keys(data, (*SECTIONS, "knobs"), path, "space")
    flat: dict[str, Any] = {}

    def finite(name: str, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{_where(path, 'space.' + name)}: {shown(item)} is not allowed; "
                                  f"a number must be finite")
        return value

    def walk(prefix: str, value: Any) -> None:
        # tf_data nests (tf_data: {autotune: {enabled: ...}}); a value is never a mapping
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(path, 'space.' + prefix)}: expected a mapping of knob "
                              f"names to values, got {shown(value)}")
        for sub, subvalue in value.items():
            name = f"{prefix}.{sub}"
            if isinstance(subvalue, dict) and prefix.startswith("tf_data"):
                walk(name, subvalue)
            else:
                flat[name] = finite(name, subvalue)

    for key, value in data.items():
        if key in ("tf_data", "env", "precision"):
            walk(key, value)
        else:
            flat[key] = finite(key, value)
    return flat


def _knobs(data: Any, path: Path) -> dict[str, list[Any]]:
    """``knobs: {map_parallelism: [1, 2, 4, autotune]}``: names a builder can take as keyword
    arguments, each with a non-empty list of distinct plain values."""
    if data is None:
        return {}
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{_where(path, 'knobs')}: expected a mapping of knob names to lists "
                          f"of candidate values, e.g. {{map_parallelism: [1, 2, 4, {AUTOTUNE}]}}, "
                          f"got {shown(data)}")
    knobs: dict[str, list[Any]] = {}
    for name, values in data.items():
        where = _where(path, f"knobs.{name}")
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError(f"{_where(path, 'knobs')}: {shown(name)} is not a valid knob name; "
                              f"use "
                              f"a Python identifier (the builder's keyword argument)")
        if not isinstance(values, list):
            raise ConfigError(f"{where}: expected a list of candidate values, got {shown(values)}")
        if not values:
            raise ConfigError(f"{where}: empty list; give at least one candidate value")
        seen: list[tuple[type, Any]] = []
        for value in values:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}: {shown(value)} is not allowed; a number must be "
                                  f"finite")
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ConfigError(f"{where}: {shown(value)} is not allowed; allowed: numbers, "
                                  f"strings, true, false, null and {AUTOTUNE} "
                                  f"(tf.data.AUTOTUNE)")
            if (type(value), value) in seen:
                raise ConfigError(f"{where}: {shown(value)} is listed twice")
            seen.append((type(value), value))
        knobs[name] = list(values)
    return knobs


def load(path: str | Path) -> Config:
    """Read and check a config file. Raises :class:`ConfigError` with a one-line message."""
    path = Path(path)
    data = yamlsafe.load(path, "config", aliases=True)
    return parse(data, path)


def _workload(data: dict[str, Any], path: Path, base_dir: Path) -> Workload:
    """The workload section: builder functions, or a model file."""
    wl = check_keys(data.get("workload"), WORKLOAD_KEYS, path, "workload")
    if "workload" not in data or not wl:
        raise ConfigError(f"{_where(path, 'workload')}: missing; it needs model, data and mode "
                          f"(or a model file: model: path/to/model.keras)")
    if is_model_file(wl):
        from tuner.config import kerascheck

        kerascheck.check(_where(path, "workload.model"))   # before any child loads the file
        return _model_file_workload(wl, path, base_dir)
    else:
        for key in MODEL_FILE_KEYS:
            if key in wl:
                raise ConfigError(f"{_where(path, 'workload.' + key)}: applies to a model file "
                                  f"(model: a .keras or .h5 file, or saved_model: a directory), "
                                  f"not to builder functions")
        mode = choice(wl.get("mode"), MODES, _where(path, "workload.mode"))
        for key in ("data",) if mode == "data" else ("model", "data"):
            if key not in wl:
                raise ConfigError(f"{_where(path, 'workload.' + key)}: missing; expected "
                                  f"'file.py:function' or 'package.module:function'")
        model = _builder(wl["model"], _where(path, "workload.model"), base_dir) \
            if wl.get("model") is not None else None
    return Workload(model=model,
                    data=_builder(wl["data"], _where(path, "workload.data"), base_dir),
                    mode=mode, base_dir=str(base_dir))


def parse(data: Any, path: Path) -> Config:
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a mapping with a workload: "
                          f"section")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'workload' section at the top, "
                          f"got {type(data).__name__}")
    check_keys(data, TOP_KEYS, path, "")
    base_dir = path.resolve().parent

    workload = _workload(data, path, base_dir)

    search = _section(Search, data.get("search"), path, "search", SEARCH_RULES)
    if search.grace_period <= search.heartbeat_interval:
        raise ConfigError(f"{_where(path, 'search.grace_period')}: expected more than "
                          f"search.heartbeat_interval ({search.heartbeat_interval}), got "
                          f"{search.grace_period}")
    measure = _section(Measure, data.get("measure"), path, "measure", MEASURE_RULES)
    validate = _section(Validate, data.get("validate"), path, "validate", VALIDATE_RULES)
    if validate.max_rounds < validate.rounds:
        if "max_rounds" in (data.get("validate") or {}):
            raise ConfigError(f"{_where(path, 'validate.max_rounds')}: {validate.max_rounds} is "
                              f"below validate.rounds ({validate.rounds}), the first look's size")
        validate = dataclasses.replace(validate, max_rounds=validate.rounds)
    space = check_overrides(_flatten_space(data.get("space"), path), _where(path, "space"))
    if BATCH_SIZE.name in space and not workload.generated:
        raise ConfigError(f"{_where(path, 'space.batch_size')}: the batch size is searched only "
                          f"for a model file whose inputs tuner generates (workload.model: a "
                          f".keras or .h5 file, or saved_model: a directory, without data:); "
                          f"a dataset's batches fix their own size")
    policy = space.get(PRECISION_POLICY)
    if policy not in (None, [None]) and workload.model_format is not None:
        raise ConfigError(f"{_where(path, 'space.precision.keras_policy')}: Keras's dtype policy "
                          f"applies to a model a builder makes (workload.model: file.py:function)"
                          f"; a saved model keeps the dtypes it was saved with")
    knobs = _knobs(data.get("knobs"), path)
    if knobs and workload.generated:
        raise ConfigError(f"{_where(path, 'knobs')}: declared knobs are arguments of your "
                          f"builders; a model file without data: has none (give data: "
                          f"file.py:function to use them)")
    objective = _objective(data.get("objective", "throughput"), path)
    accuracy = _accuracy(data.get("accuracy"), path, workload)

    study = check_keys(data.get("study"), STUDY_KEYS, path, "study")
    if "name" in study:
        name = check_study_name(study["name"], _where(path, "study.name"))
    else:
        name = path.stem
        if not isinstance(name, str) or not STUDY_NAME_RE.match(name):
            raise ConfigError(f"{path}: the study name is taken from the file name, and "
                              f"{shown(name)} "
                              f"is not a valid study name (1-100 letters, digits, '.', '_' or "
                              f"'-', starting with a letter or digit); rename the file or set "
                              f"study: {{name: ...}}")
    storage = study.get("storage") or default_storage(name)
    check_storage(storage, _where(path, "study.storage"))
    output = check_output(data.get("output") or default_output(name), _where(path, "output"))

    return Config(path=str(path), workload=workload, search=search, measure=measure,
                  validate=validate, space=space, knobs=knobs, objective=objective,
                  accuracy=accuracy, study_name=name,
                  storage=storage, output=output)


WORKLOAD_KEYS = ("model", "data", "mode", "saved_model", "signature", "batch_size",
                 "input_shapes")
MODEL_FILE_KEYS = ("saved_model", "signature", "batch_size", "input_shapes")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
DEFAULT_BATCH_SIZE = 32
DEFAULT_SIGNATURE = "serving_default"
_DIMS_RE = re.compile(r"^[0-9]+(x[0-9]+)*$")


def is_model_file(wl: dict[str, Any]) -> bool:
    """Whether a workload section names a model file rather than builder functions."""
    model = wl.get("model")
    if "saved_model" in wl:
        return True
    if not isinstance(model, str):
        return False
    model = model.strip()
    # a builder is always file.py:function or module:function
    return model.lower().endswith(KERAS_SUFFIXES) or (":" not in model
                                                      and not model.endswith(".py"))


def model_format(file: Path, where: str) -> str:
    """``keras`` or ``saved_model`` for an existing model path, or a ConfigError saying what is
    wrong with it (checked by the file system only: the parent never imports TensorFlow)."""
    if not file.exists():
        raise ConfigError(f"{where}: {str(file)!r} does not exist; expected a .keras or .h5 file, "
                          f"or a SavedModel directory")
    if file.is_dir():
        if not any((file / name).is_file() for name in SAVED_MODEL_FILES):
            raise ConfigError(f"{where}: {str(file)!r} is a directory without saved_model.pb; "
                              f"expected a SavedModel directory, or a .keras or .h5 file")
        return "saved_model"
    if not file.is_file() or not file.name.lower().endswith(KERAS_SUFFIXES):
        raise ConfigError(f"{where}: {str(file)!r} is not a model file; expected a .keras or .h5 "
                          f"file, or a SavedModel directory (with saved_model.pb)")
    return "keras"


def shape_of(value: Any, where: str) -> list[int]:
    """An input shape: ``[1, 224, 224, 3]`` or ``"1x224x224x3"`` -> a list of sizes >= 1."""
    if isinstance(value, str) and _DIMS_RE.match(value.strip()):
        dims = [int(d) for d in value.strip().split("x")]
    elif isinstance(value, list) and value and all(
            isinstance(d, int) and not isinstance(d, bool) for d in value):
        dims = list(value)
    else:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"{where}: expected a shape like 1x224x224x3 or [1, 224, 224, 3] "
                          f"(sizes >= 1), got {shown(value)}")
    return dims


def _model_file_workload(wl: dict[str, Any], path: Path, base_dir: Path) -> Workload:
    """``{model: m.keras, batch_size: 32}`` or ``{saved_model: dir, signature: ...,
    input_shapes: {...}}``; paths relative to the config file, like the builders'."""
    if "saved_model" in wl and "model" in wl:
        raise ConfigError(f"{_where(path, 'workload.model')}: give model (a .keras or .h5 file) "
                          f"or saved_model (a directory), not both")
    key = "saved_model" if "saved_model" in wl else "model"
    raw = wl[key]
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{_where(path, 'workload.' + key)}: expected a path, got {shown(raw)}")
    file = Path(raw.strip()).expanduser()
    file = (file if file.is_absolute() else base_dir / file).resolve()
    fmt = model_format(file, _where(path, f"workload.{key}"))
    mode = choice(wl.get("mode", "predict"), ("predict", "train"),
                   _where(path, "workload.mode"))
    if mode == "train" and fmt != "keras":
        raise ConfigError(f"{_where(path, 'workload.mode')}: train needs a compiled .keras model; "
                          f"a SavedModel is measured in mode predict")
    data = _builder(wl["data"], _where(path, "workload.data"), base_dir) \
        if wl.get("data") is not None else None
    signature = wl.get("signature")
    if signature is not None and (fmt != "saved_model" or not isinstance(signature, str)
                                  or not signature):
        raise ConfigError(f"{_where(path, 'workload.signature')}: expected the name of a "
                          f"SavedModel signature (saved_model: only), got {shown(signature)}")
    batch = wl.get("batch_size")
    shapes = wl.get("input_shapes")
    if data is not None:
        for name, value in (("batch_size", batch), ("input_shapes", shapes)):
            if value is not None:
                raise ConfigError(f"{_where(path, 'workload.' + name)}: applies to generated "
                                  f"inputs; with data: the dataset's batches are used as they "
                                  f"are")
    else:
        batch = _number(DEFAULT_BATCH_SIZE if batch is None else batch,
                        _where(path, "workload.batch_size"), integer=True, minimum=1)
    if shapes is not None and not isinstance(shapes, dict):
        raise ConfigError(f"{_where(path, 'workload.input_shapes')}: expected a mapping of input "
                          f"names to shapes, e.g. {{image: 1x224x224x3}}, got {shown(shapes)}")
    checked = {str(name): shape_of(value, _where(path, f"workload.input_shapes.{name}"))
               for name, value in (shapes or {}).items()}
    return Workload(model=str(file), data=data, mode=mode, base_dir=str(base_dir),
                    model_format=fmt,
                    signature=(signature or DEFAULT_SIGNATURE) if fmt == "saved_model" else None,
                    batch_size=batch, input_shapes=checked)


def _objective(raw: Any, path: Path) -> Objective:
    """``objective: latency_p95`` or ``objective: {metric: throughput, latency_budget_ms: 20}``."""
    if isinstance(raw, dict):
        data = check_keys(raw, ("metric", "latency_budget_ms"), path, "objective")
        metric = choice(data.get("metric", "throughput"), OBJECTIVES,
                         _where(path, "objective.metric"))
        budget = data.get("latency_budget_ms")
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
                    or not math.isfinite(budget) or not budget > 0:
                raise ConfigError(f"{_where(path, 'objective.latency_budget_ms')}: expected "
                                  f"milliseconds (a number > 0), got {shown(budget)}")
            if metric != "throughput":
                raise ConfigError(f"{_where(path, 'objective.latency_budget_ms')}: a latency "
                                  f"budget goes with metric 'throughput' (best throughput under "
                                  f"the budget), not {shown(metric)}")
            budget = float(budget)
        return Objective(metric=metric, latency_budget_ms=budget)
    return Objective(metric=choice(raw, OBJECTIVES, _where(path, "objective")))


def check_tolerance(value: Any, metric: str, where: str) -> float | None:
    """An accuracy tolerance: a number > 0 (below 1 for top1, a share of samples), or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not value > 0 or (metric == "top1" and value >= 1):
        allowed = "a share between 0 and 1 (exclusive)" if metric == "top1" else "a number > 0"
        raise ConfigError(f"{where}: expected {allowed} or null, got {value!r}")
    return float(value)


def _accuracy(raw: Any, path: Path, workload: Workload) -> Accuracy:
    """``accuracy: {metric: rel_l2, tolerance: 0.05, train: false}``."""
    data = check_keys(raw, ("metric", "tolerance", "train", "samples"), path, "accuracy")
    metric = choice(data.get("metric", "rel_l2"), ACCURACY_METRICS,
                     _where(path, "accuracy.metric"))
    tolerance = check_tolerance(data.get("tolerance"), metric,
                                _where(path, "accuracy.tolerance"))
    train = _bool(data.get("train", False), _where(path, "accuracy.train"))
    samples = _int(1)(data.get("samples", GUARD_SAMPLES), _where(path, "accuracy.samples"))
    if train and workload.mode != "train":
        raise ConfigError(f"{_where(path, 'accuracy.train')}: applies to workload mode train, "
                          f"not {workload.mode!r}")
    return Accuracy(metric=metric, tolerance=tolerance, train=train, samples=samples)


def default_storage(name: str) -> str:
    return f"sqlite:///results/{name}.db"


def default_output(name: str) -> str:
    return f"results/{name}/tuned.yaml"


def check_study_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not STUDY_NAME_RE.match(name):
        raise ConfigError(f"{where}: {shown(name)} is not a valid study name; use 1-100 letters, "
                          f"digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_storage(url: Any, where: str) -> str:
    from tuner.base.urls import shown  # the URL in a message: secrets masked, whatever its spelling

    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{where}: {shown(url)} is not a storage URL; expected e.g. "
                          f"sqlite:///results/study.db or postgresql://user:pass@host/db")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"{where}: unsupported storage scheme {shown(scheme)} in "
                          f"{shown(url)}; allowed: sqlite, postgresql, mysql (Optuna RDB "
                          f"storage URLs)")
    return url


def check_output(path: Any, where: str) -> str:
    if not isinstance(path, str) or not path.endswith((".yaml", ".yml")):
        raise ConfigError(f"{where}: expected a path ending in .yaml, got {path!r}")
    return path


def with_overrides(config: Config, *, n_trials: int | None = None, timeout: float | None = None,
                   budget: float | None = None,
                   trial_timeout: float | None = None, storage: str | None = None,
                   study_name: str | None = None, output: str | None = None,
                   seed: int | None = None, force: bool = False, max_trials: int | None = None,
                   allow_other_machines: bool = False,
                   keep_backups: int | None = None, accuracy_tolerance: float | None = None,
                   accuracy_metric: str | None = None) -> Config:
    """Apply CLI flags on top of the file. A new study name moves the default storage and output
    with it unless the file or a flag set those explicitly.

    The numbers arrive checked: the command line's parser turns each flag's text into a number
    and refuses a bad one (:mod:`tuner.cli`). The study name, storage URL and output path are
    checked here, by the same checks as the file's."""
    changes: dict[str, Any] = {}
    search_changes: dict[str, Any] = {}
    numbers = {"n_trials": n_trials, "timeout": timeout, "budget": budget,
               "trial_timeout": trial_timeout,
               "seed": seed, "max_trials": max_trials}
    search_changes.update({k: v for k, v in numbers.items() if v is not None})
    if allow_other_machines:
        search_changes["allow_other_machines"] = True
    if search_changes:
        changes["search"] = dataclasses.replace(config.search, **search_changes)
    if study_name is not None:
        check_study_name(study_name, "--study-name")
        changes["study_name"] = study_name
        if config.storage == default_storage(config.study_name):
            changes["storage"] = default_storage(study_name)
        if config.output == default_output(config.study_name):
            changes["output"] = default_output(study_name)
    if storage is not None:
        changes["storage"] = check_storage(storage, "--storage")
    if output is not None:
        changes["output"] = check_output(output, "--output")
    if force:
        changes["force"] = True
    if keep_backups is not None:
        changes["keep_backups"] = keep_backups
    if accuracy_tolerance is not None or accuracy_metric is not None:
        metric = accuracy_metric or config.accuracy.metric
        choice(metric, ACCURACY_METRICS, "--accuracy-metric")
        tolerance = config.accuracy.tolerance if accuracy_tolerance is None else \
            check_tolerance(accuracy_tolerance, metric, "--accuracy-tolerance")
        changes["accuracy"] = dataclasses.replace(config.accuracy, metric=metric,
                                                  tolerance=tolerance)
    return config.replace(**changes)
