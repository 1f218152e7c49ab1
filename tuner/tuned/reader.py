"""Reading a tuned file as untrusted input: the one reader every command that acts on one uses.

A tuned file travels (committed, copied between machines, mounted into containers, pasted into
tickets), and ``tuner.apply()``, ``python -m tuner run`` and ``export`` turn what it says into a
process's environment, CPU set and thread pools. So :func:`read` checks the whole ``settings``
block against the knob registry, each value by its own knob's rule, and refuses anything else
with one line naming the file and the field:

- ``settings.env`` may name only the variables the registry's environment knobs own
  (``TF_ENABLE_ONEDNN_OPTS``, ``OMP_NUM_THREADS``, ...); a variable the user added on purpose is
  accepted with ``allow_env`` (``--allow-env NAME``), and even then its name must be a plain
  variable name and its value a string without NUL or line breaks;
- an ``unvalidated`` verdict (one search trial's numbers) is refused unless
  ``allow_unvalidated``;
- strings that end up in messages or comments carry no line breaks or other control characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tuner.knobs as knobs
from tuner.base import host
from tuner.base.render import did_you_mean, plain
from tuner.base.yamlsafe import shown
from tuner.errors import ConfigError
from tuner.tuned import store

VERDICTS = ("tuned", "defaults", "unvalidated")

# A variable name every shell, dotenv reader and container runtime takes as it is.
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The variables a tuned file's env: may set: those of the environment knobs, whose home in the
# file is env:. Thread counts live in their own fields (the launcher derives their variables).
ENV_KNOBS: dict[str, knobs.EnvKnob] = {
    k.variable: k for k in knobs.KNOBS.values() if isinstance(k, knobs.EnvKnob)}
ALLOWED_ENV = tuple(ENV_KNOBS)
_FIELD_OF_VARIABLE = {var: k.name for k in knobs.KNOBS.values()
                      if not isinstance(k, knobs.EnvKnob) for var in k.controls}

# settings: top-level keys: the registry's sections, and the declared knobs' values
SETTINGS_KEYS = (*knobs.SECTIONS, "knobs")

# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators: what could end a
# comment line or a message line (YAML and str.splitlines count some of these as line breaks)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

ALLOW_UNVALIDATED_HINT = ("pass --allow-unvalidated (python -m tuner run/export) or "
                          "allow_unvalidated=True (tuner.apply()) to use them anyway")


@dataclass(frozen=True)
class TunedFile:
    """A tuned file that passed :func:`read`: ``doc`` is the whole document, its ``settings``
    checked; ``allowed_env``: the variables beyond the registry's it was accepted with."""

    path: str
    doc: dict[str, Any]
    allowed_env: tuple[str, ...] = field(default_factory=tuple)

    @property
    def verdict(self) -> str:
        return str(self.doc["verdict"])

    @property
    def settings(self) -> dict[str, Any]:
        return self.doc["settings"]


def read(path: str | Path, *, allow_env: Iterable[str] = (),
         allow_unvalidated: bool = False, use: bool = True) -> TunedFile:
    """Read and check the tuned file at ``path``; a :class:`ConfigError` (one line, naming the
    file and the field) for anything that is not a tuned file tuner could have written.

    ``allow_env``: variable names ``settings.env`` may set beyond the registry's own.
    ``allow_unvalidated``: accept an ``unvalidated`` verdict, or a ``tuned`` one whose evidence
    does not support it (otherwise refused, saying why). ``use``: the file is about to be
    applied (``run``, ``export``, ``apply()``): the evidence must support the verdict and the
    declared knobs stay within the declared space. ``show`` reads with ``use=False`` and says
    what :func:`evidence_problem` finds instead."""
    where = str(path)
    if "\x00" in where:
        raise ConfigError(f"{shown(where)}: a path cannot contain a NUL byte")
    extra = allowed_names(allow_env)
    doc = store.load(path)
    if type(doc["format_version"]) is not int:
        raise ConfigError(f"{where}: format_version: expected an integer, "
                          f"got {shown(doc['format_version'])}")
    if "kind" in doc or "sizes" in doc:
        raise ConfigError(f"{where}: both a tuned file and a sizes file (it has "
                          f"{'kind' if 'kind' in doc else 'sizes'}:); a file is one or the other: "
                          f"refused")
    verdict = doc.get("verdict")
    if verdict not in VERDICTS:
        raise ConfigError(f"{where}: verdict: expected one of {', '.join(VERDICTS)}, "
                          f"got {shown(verdict)}")
    check_settings(doc["settings"], where, allow_env=extra)
    check_machine_block(doc.get("machine"), where)
    check_precision_evidence(doc, where)
    if verdict == "unvalidated" and not allow_unvalidated:
        raise ConfigError(
            f"{where}: verdict: unvalidated: the search was interrupted before validation, so "
            f"these settings come from one search trial and were never validated against "
            f"TensorFlow's defaults; re-run the same `python -m tuner search` to resume and "
            f"validate, or {ALLOW_UNVALIDATED_HINT}")
    if use:
        problem = evidence_problem(doc)
        if problem and not allow_unvalidated:
            raise ConfigError(f"{where}: verdict: {verdict}: not validated: {problem}; "
                              f"{ALLOW_UNVALIDATED_HINT}")
        check_declared_space(doc["settings"], declared_space(doc, where), where)
    return TunedFile(path=where, doc=doc, allowed_env=extra)


# -- the evidence behind the verdict -------------------------------------------------------------

# validation.min_speedup of files written before it was recorded: the config's default then
DEFAULT_MIN_SPEEDUP = 1.05


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def evidence_problem(doc: dict[str, Any]) -> str | None:
    """Why the file's own evidence does not support its verdict, or None when it does. A
    ``tuned`` verdict needs its result (speedup, interval, p-value) and machine, satisfying the
    adoption rule validation applied: p below the recorded level (the last look's in a
    sequential validation, else ``validation.alpha``), the interval's low end above 1, and at
    least the minimum speedup. (Settings that change the model's numbers are held to their
    measured deviation by :func:`check_precision_evidence`, whatever the verdict.)"""
    if doc.get("verdict") != "tuned":
        return None
    result = doc.get("result")
    if not isinstance(result, dict):
        return "the file carries no result (speedup, interval, p-value)"
    if not isinstance(doc.get("machine"), dict) or not doc["machine"]:
        return "the file does not say which machine it was measured on (machine: missing)"
    speedup, ci, p = result.get("speedup"), result.get("speedup_ci95"), result.get("p_value")
    if not _number(speedup) or speedup <= 0:
        return f"result.speedup: expected a positive number, got {shown(speedup)}"
    if not (isinstance(ci, list) and len(ci) == 2 and all(_number(x) for x in ci)
            and ci[0] <= ci[1]):
        return f"result.speedup_ci95: expected [low, high], got {shown(ci)}"
    if not _number(p) or not 0 <= p <= 1:
        return f"result.p_value: expected a number between 0 and 1, got {shown(p)}"
    validation = doc.get("validation")
    validation = validation if isinstance(validation, dict) else {}
    alpha = validation.get("alpha")
    if not _number(alpha) or not 0 < alpha < 1:
        return f"validation.alpha: expected the significance level (0-1), got {shown(alpha)}"
    level = alpha
    sequential = validation.get("sequential")
    looks = sequential.get("looks") if isinstance(sequential, dict) else None
    if isinstance(looks, list) and looks:
        last = looks[-1].get("level") if isinstance(looks[-1], dict) else None
        if not _number(last) or not 0 < last <= alpha:
            return (f"validation.sequential.looks: the last look's level: expected a number in "
                    f"(0, {alpha:g}], got {shown(last)}")
        level = last
    minimum = validation.get("min_speedup", DEFAULT_MIN_SPEEDUP)
    if not _number(minimum) or minimum < 1:
        return f"validation.min_speedup: expected a number >= 1, got {shown(minimum)}"
    if p >= level:
        return f"p={p:.3g} is not below the level {level:.3g}"
    if ci[0] <= 1:
        return f"the speedup's 95% interval starts at {ci[0]:.3f}x, not above 1"
    if speedup < minimum:
        return f"{speedup:.3f}x is below the minimum speedup {minimum:g}x"
    return None


# -- the declared knobs' space -------------------------------------------------------------------

def declared_space(doc: dict[str, Any], where: str) -> dict[str, list[Any]] | None:
    """The declared knobs and their candidate values the search recorded
    (``search.declared_knobs``), checked; None when the file records none."""
    search = doc.get("search")
    space = search.get("declared_knobs") if isinstance(search, dict) else None
    return check_space_record(space, where, "search.declared_knobs")


def check_space_record(space: Any, where: str, name: str) -> dict[str, list[Any]] | None:
    if space is None:
        return None
    if not isinstance(space, dict) or not all(
            isinstance(k, str) and k.isidentifier() and isinstance(v, list) and v
            for k, v in space.items()):
        raise ConfigError(f"{where}: {name}: expected a mapping of knob names to lists of "
                          f"values, got {shown(space)}")
    return space


def check_declared_space(tree: dict[str, Any], space: dict[str, list[Any]] | None,
                         where: str) -> None:
    """``settings.knobs``: only the names the search declared, each at one of its values."""
    declared = tree.get("knobs") or {}
    if not declared:
        return
    if space is None:
        raise ConfigError(f"{where}: settings.knobs: the file does not record the space the "
                          f"search declared (search.declared_knobs), so its declared knobs "
                          f"cannot be checked; re-run the search with this tuner")
    for key, value in declared.items():
        if key not in space:
            raise ConfigError(f"{where}: settings.knobs.{key}: not a knob the search declared; "
                              f"declared: {', '.join(space) or 'none'}")
        if not any(type(value) is type(v) and value == v for v in space[key]):
            raise ConfigError(f"{where}: settings.knobs.{key}: {shown(value)} is not one of the "
                              f"declared values {shown(space[key])}")


def allowed_names(names: Iterable[str] | str) -> tuple[str, ...]:
    """The extra variable names a caller allows, checked (a single string is one name)."""
    if isinstance(names, str):
        names = (names,)
    out = []
    for name in names:
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
            raise ConfigError(f"--allow-env (allow_env): {shown(name)} is not a variable name "
                              f"(letters, digits and _, not starting with a digit)")
        out.append(name)
    return tuple(dict.fromkeys(out))


# -- the settings block ---------------------------------------------------------------------------

def _int_at_least(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_settings(tree: Any, path: str, *, allow_env: Iterable[str] = ()) -> dict[str, Any]:
    """Check a tuned file's ``settings`` block field by field: every key known, every value by
    its knob's rule. Errors name the file, the field and the bad value; returns ``tree``."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: settings: missing or not a mapping")
    for key in tree:
        if key not in SETTINGS_KEYS:
            raise ConfigError(f"{path}: settings: unknown key {shown(key)}"
                              f"{did_you_mean(key, SETTINGS_KEYS)}; allowed: "
                              f"{', '.join(SETTINGS_KEYS)}")
    for knob in knobs.THREADS:
        if knob.name not in tree:
            raise ConfigError(f"{path}: settings.{knob.name}: missing")
        if not knob.is_valid(tree[knob.name]):
            raise ConfigError(f"{path}: settings.{knob.name}: expected an integer >= 0, "
                              f"got {shown(tree[knob.name])}")
    _check_tf_data(tree.get("tf_data") or {}, path)
    _check_env(tree.get("env"), path, allowed_names(allow_env))
    _check_declared(tree.get("knobs"), path)
    _check_precision(tree.get("precision"), path)
    allocator = tree.get(knobs.ALLOCATOR.name, knobs.ALLOCATOR.default)
    if not knobs.ALLOCATOR.is_valid(allocator):
        raise ConfigError(f"{path}: settings.allocator: {shown(allocator)} is not allowed; "
                          f"allowed: "
                          f"{', '.join(host.ALLOCATOR_NAMES)}")
    cpus = tree.get(knobs.CPUS.name)
    if cpus is not None:
        _check_cpu_list(cpus, path, "settings.cpus", "a list of CPU numbers or null")
    _check_instances(tree, path)
    batch = tree.get(knobs.BATCH_SIZE.name)
    if batch is not None and not knobs.BATCH_SIZE.is_valid(batch):
        raise ConfigError(f"{path}: settings.batch_size: expected an integer >= 1 or null, "
                          f"got {shown(batch)}")
    return tree


# the tuned file's settings.tf_data layout: {private_threadpool_size: .., autotune: {enabled: ..}}
_TF_DATA_FIELDS = {k.target: k for k in knobs.TF_DATA}


def _check_tf_data(data: Any, path: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: settings.tf_data{'.' + prefix.rstrip('.') if prefix else ''}: "
                          f"expected a mapping, got {shown(data)}")
    for key, value in data.items():
        target = f"{prefix}{key}"
        knob = _TF_DATA_FIELDS.get(target)
        if knob is not None:
            if not knob.is_valid(value):
                raise ConfigError(f"{path}: settings.tf_data.{target}: expected "
                                  f"{knob.file_allowed}, got {shown(value)}")
        elif any(t.startswith(target + ".") for t in _TF_DATA_FIELDS):
            _check_tf_data(value, path, target + ".")
        else:
            allowed = dict.fromkeys(t[len(prefix):].split(".")[0] for t in _TF_DATA_FIELDS
                                    if t.startswith(prefix))
            name = target if isinstance(key, str) and key.isprintable() else shown(target)
            raise ConfigError(f"{path}: settings.tf_data.{plain(name)}: unknown"
                              f"{did_you_mean(key, list(allowed))}; allowed: "
                              f"{', '.join(allowed)}")


def _check_env(env: Any, path: str, extra: tuple[str, ...]) -> None:
    if env is None:
        return
    if not isinstance(env, dict):
        raise ConfigError(f"{path}: settings.env: expected a mapping of variable names to "
                          f"strings, got {shown(env)}")
    allowed = (*ALLOWED_ENV, *(n for n in extra if n not in ALLOWED_ENV))
    for var, value in env.items():
        if not isinstance(var, str) or not VARIABLE_NAME.fullmatch(var):
            raise ConfigError(f"{path}: settings.env: {shown(var)} is not a variable name "
                              f"(letters, "
                              f"digits and _, not starting with a digit)")
        if var not in allowed:
            owner = _FIELD_OF_VARIABLE.get(var)
            why = f" (settings.{owner} sets it)" if owner else ""
            raise ConfigError(
                f"{path}: settings.env.{var}: not a variable tuner sets{why}; allowed: "
                f"{', '.join(allowed)}. A variable you added on purpose is accepted with "
                f"--allow-env {var} (python -m tuner run/export) or allow_env=[{shown(var)}] "
                f"(tuner.apply())")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: settings.env.{var}: expected a string, got {shown(value)}")
        if _CONTROL.search(value):   # an ESC would reach the terminal through export
            raise ConfigError(f"{path}: settings.env.{var}: {shown(value)}: a value cannot contain "
                              f"a NUL byte or a line break, or any other control character")
        knob = ENV_KNOBS.get(var)
        if knob is not None and not knob.is_valid(value):
            raise ConfigError(f"{path}: settings.env.{var}: expected {knob.file_allowed}, "
                              f"got {shown(value)}")


def _check_declared(declared: Any, path: str) -> None:
    if declared is None:
        return
    if not isinstance(declared, dict):
        raise ConfigError(f"{path}: settings.knobs: expected a mapping of knob names to values, "
                          f"got {shown(declared)}")
    for key, value in declared.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{path}: settings.knobs: {shown(key)} is not a valid knob name")
        plain = value is None or isinstance(value, (bool, int, float, str))
        if not plain or (isinstance(value, float) and not math.isfinite(value)) or \
                (isinstance(value, str) and _CONTROL.search(value)):
            raise ConfigError(f"{path}: settings.knobs.{key}: expected a number, a string "
                              f"(without control characters), true, false or null, "
                              f"got {shown(value)}")


_PRECISION_FIELDS = {k.key: k for k in knobs.PRECISION_IN_PROCESS}


def _check_precision(block: Any, path: str) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: settings.precision: expected a mapping, got {block!r}")
    for key, value in block.items():
        knob = _PRECISION_FIELDS.get(key)
        if knob is None:
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)
            raise ConfigError(f"{path}: settings.precision.{shown}: unknown; allowed: "
                              f"{', '.join(_PRECISION_FIELDS)}")
        if not knob.is_valid(value):
            raise ConfigError(f"{path}: settings.precision.{key}: expected {knob.allowed}, "
                              f"got {value!r}")


def precision_settings(tree: dict[str, Any]) -> dict[str, Any]:
    """The reduced-precision knobs a (checked) ``settings`` block turns on, by knob name."""
    return {k.name: value for k in knobs.PRECISION
            if (value := k.read(tree)) != k.default}


def check_precision_evidence(doc: dict[str, Any], path: str) -> None:
    """Reduced precision changes the model's numbers: a file that turns it on must carry the
    accuracy guard's measured deviation of those settings, within the file's own tolerance
    (``result.accuracy``, format_version 2)."""
    used = precision_settings(doc["settings"])
    if not used:
        return
    names = ", ".join(f"{name}={knobs.text(v)}" for name, v in used.items())
    block = (doc.get("result") or {}).get("accuracy") if isinstance(doc.get("result"),
                                                                    dict) else None
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: settings turn on reduced precision ({names}) but "
                          f"result.accuracy, the guard's measured deviation, is missing; "
                          f"only a search with an accuracy tolerance writes such settings")
    metric, tolerance = block.get("metric"), block.get("tolerance")
    deviation = block.get("deviation")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in (tolerance, deviation))
    if metric not in ("rel_l2", "max_abs", "top1") or not numbers or tolerance <= 0:
        raise ConfigError(f"{path}: result.accuracy: expected metric rel_l2, max_abs or top1 "
                          f"with a numeric tolerance > 0 and deviation for the reduced precision "
                          f"({names}), got metric {shown(metric)}, tolerance {shown(tolerance)}, "
                          f"deviation {shown(deviation)}")
    within = deviation >= 1 - tolerance if metric == "top1" else deviation <= tolerance
    if not within:
        raise ConfigError(f"{path}: result.accuracy: the measured deviation ({metric} "
                          f"{deviation:g}) is beyond the tolerance ({tolerance:g}); refusing "
                          f"the reduced precision ({names})")


def check_cpu(doc: dict[str, Any], path: str, flags: Any) -> None:
    """A reduced-precision setting needs its CPU instructions (``flags``: this CPU's); without
    them oneDNN would emulate it slowly or ignore it, so it is refused in one line."""
    for name, value in precision_settings(doc["settings"]).items():
        lacking = knobs.KNOBS[name].lacks_flags(value, flags)
        if lacking:
            raise ConfigError(f"{path}: {lacking}; re-run the search on this machine")


def _check_cpu_list(value: Any, path: str, name: str, expected: str) -> list[int]:
    if not isinstance(value, list) or not value or \
            not all(_int_at_least(c, 0) for c in value):
        raise ConfigError(f"{path}: {name}: expected {expected}, got {shown(value)}")
    seen: set[int] = set()
    for cpu in value:
        if cpu in seen:
            raise ConfigError(f"{path}: {name}: CPU {cpu} appears twice in {shown(value)}")
        seen.add(cpu)
    return value


def _check_instances(tree: dict[str, Any], path: str) -> None:
    raw = tree.get(knobs.INSTANCES.name, 1)
    instances = {"count": raw, "cpus": None} if _int_at_least(raw, 0) else raw
    if not isinstance(instances, dict) or not _int_at_least(instances.get("count"), 1):
        raise ConfigError(f"{path}: settings.instances: expected {{count: N >= 1, cpus: [[...], "
                          f"...]}}, got {shown(raw)}")
    unknown = [k for k in instances if k not in ("count", "cpus")]
    if unknown:
        raise ConfigError(f"{path}: settings.instances: unknown key {shown(unknown[0])}; allowed: "
                          f"count, cpus")
    count, sets = instances["count"], instances.get("cpus")
    if count == 1:
        if sets is not None:
            raise ConfigError(f"{path}: settings.instances.cpus: expected null for a single "
                              f"instance (count: 1), got {shown(sets)}")
        return
    expected = f"{count} lists of CPU numbers, one per instance"
    if not isinstance(sets, list) or len(sets) != count:
        raise ConfigError(f"{path}: settings.instances.cpus: expected {expected}, "
                          f"got {shown(sets)}")
    owner: dict[int, int] = {}
    for index, cpus in enumerate(sets):
        _check_cpu_list(cpus, path, "settings.instances.cpus", expected)
        for cpu in cpus:
            if cpu in owner:
                raise ConfigError(f"{path}: settings.instances.cpus: CPU {cpu} is in the sets of "
                                  f"instances {owner[cpu]} and {index}; each instance has its "
                                  f"own CPUs")
            owner[cpu] = index


# -- the machine block (compared with this machine, and named in warnings) ------------------------

def check_machine_block(machine: Any, path: str) -> None:
    if machine is None:
        return
    if not isinstance(machine, dict):
        raise ConfigError(f"{path}: machine: expected a mapping, got {shown(machine)}")
    usable = machine.get("usable_cpus")
    if usable is not None and not _int_at_least(usable, 1):
        raise ConfigError(f"{path}: machine.usable_cpus: expected an integer >= 1 or null, "
                          f"got {shown(usable)}")
    for key in ("cpu_model", "tf_version"):
        value = machine.get(key)
        if value is not None and (not isinstance(value, str) or _CONTROL.search(value)):
            raise ConfigError(f"{path}: machine.{key}: expected a line of text or null, "
                              f"got {shown(value)}")
