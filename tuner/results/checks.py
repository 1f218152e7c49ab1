"""A result document checked field by field: every number, interval, count and text where it
belongs, settings by their knobs' rules (a damaged field is one line naming it)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from tuner.base.render import plain
from tuner.base.yamlsafe import shown
from tuner.errors import ConfigError

VERDICTS = ("tuned", "defaults", "unvalidated")
THREAD_COUNTS = ("intra_op_parallelism_threads", "inter_op_parallelism_threads")


def bad_field(where: str, name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {name}: expected {expected}, got {shown(value)}")


def missing_field(where: str, name: str, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {name}: missing; expected {expected}")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def is_text(v: Any) -> bool:
    """One line of printable text: it goes into a table cell as it is."""
    return isinstance(v, str) and v.isprintable()


def is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool) or is_number(v) or is_text(v)


def is_interval(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(is_number(x) for x in v) and v[0] <= v[1]


def _positive(v: Any) -> bool:
    return is_number(v) and v > 0


def _probability(v: Any) -> bool:
    return is_number(v) and 0 <= v <= 1


def non_negative(v: Any) -> bool:
    return is_number(v) and v >= 0


def _mapping(parent: dict[str, Any], key: str, where: str, name: str, *,
             required: bool = False) -> dict[str, Any]:
    """``parent[key]`` as a mapping; ``{}`` when absent (or null) and not required."""
    value = parent.get(key)
    if value is None and not required:
        return {}
    if value is None:
        raise missing_field(where, name, "a mapping")
    if not isinstance(value, dict):
        raise bad_field(where, name, value, "a mapping")
    return value


def _fields(block: dict[str, Any], where: str, prefix: str,
            rules: tuple[tuple[str, Any, str], ...]) -> None:
    """Each (key, predicate, expected) of ``rules``: absent or null, else passing the predicate."""
    for key, ok, expected in rules:
        value = block.get(key)
        if value is not None and not ok(value):
            raise bad_field(where, prefix + key, value, expected)


POSITIVE = "a positive number"
PROBABILITY, INTERVAL = "a number between 0 and 1", "a list of two numbers [low, high]"
COUNT, TEXT = "an integer >= 0", "one line of text"

_RESULT_RULES = (
    ("speedup", _positive, POSITIVE), ("speedup_ci95", is_interval, INTERVAL),
    ("p_value", _probability, PROBABILITY), ("significant", lambda v: isinstance(v, bool),
                                             "true or false"),
    ("cpu_saturation", non_negative, "a number >= 0"),
    ("baseline_cpu_saturation", non_negative, "a number >= 0"),
    ("carried_by", lambda v: isinstance(v, list) and all(is_text(x) for x in v),
     "a list of knob names"),
)
_REJECTED_RULES = (("trial", is_count, COUNT), *_RESULT_RULES[:3],
                   ("rejected_because", is_text, TEXT))
_BLOCK_RULES = (("median", _positive, POSITIVE), ("ci95", is_interval, INTERVAL))
_FIRST_STEPS_RULES = (("steps", is_count, COUNT),
                      ("seconds", non_negative, "a number >= 0"),
                      ("extra_seconds", non_negative, "a number >= 0"),
                      ("processes", is_count, COUNT))
_STUDY_RULES = (("name", is_text, TEXT), ("storage", is_text, TEXT), ("n_trials", is_count, COUNT),
                ("complete", is_count, COUNT), ("pruned", is_count, COUNT),
                ("fail", is_count, COUNT))
_BUDGET_RULES = (("budget_s", _positive, POSITIVE),
                 ("spent_search_s", lambda v: is_number(v) and v >= 0, "a number >= 0"),
                 ("spent_validation_s", lambda v: is_number(v) and v >= 0, "a number >= 0"),
                 ("spent_total_s", lambda v: is_number(v) and v >= 0, "a number >= 0"),
                 ("reserved_validation_s", lambda v: is_number(v) and v >= 0, "a number >= 0"),
                 ("stopped", is_text, TEXT))
BUDGET_KEYS = tuple(rule[0] for rule in _BUDGET_RULES)
WORKLOAD_RULES = (("model", is_text, TEXT), ("data", is_text, TEXT), ("mode", is_text, TEXT),
                   ("batch_size", is_count, COUNT), ("config", is_text, TEXT))


def check_document(doc: dict[str, Any], where: str) -> None:
    """Everything show and compare read from a tuned result document."""
    verdict = doc.get("verdict")
    if verdict not in VERDICTS:
        raise bad_field(where, "verdict", verdict, "one of " + ", ".join(VERDICTS))
    for key in ("summary", "created"):
        value = doc.get(key)
        if value is not None and not is_text(value) and not isinstance(value, (date, datetime)):
            raise bad_field(where, key, value, TEXT)
    check_settings(_mapping(doc, "settings", where, "settings", required=True), where,
                   "settings")
    check_result(_mapping(doc, "result", where, "result", required=True), where)
    check_machine(_mapping(doc, "machine", where, "machine"), where)
    _fields(_mapping(doc, "workload", where, "workload"), where, "workload.", WORKLOAD_RULES)
    _fields(_mapping(doc, "study", where, "study"), where, "study.", _STUDY_RULES)
    expert = _mapping(_mapping(doc, "search", where, "search"), "expert_rule", where,
                      "search.expert_rule")
    if expert.get("settings") is not None:
        if not isinstance(expert["settings"], dict):
            raise bad_field(where, "search.expert_rule.settings", expert["settings"],
                            "a mapping of settings")
        check_settings(expert["settings"], where, "search.expert_rule.settings")
    if expert.get("throughput") is not None:
        check_block(expert["throughput"], where, "search.expert_rule.throughput")
    _fields(expert, where, "search.expert_rule.",
            (("speedup_in_search", _positive, POSITIVE),))
    _fields(_mapping(_mapping(doc, "search", where, "search"), "budget", where, "search.budget"),
            where, "search.budget.", _BUDGET_RULES)


def check_result(result: dict[str, Any], where: str) -> None:
    """The ``result`` block: throughputs, speedup, interval, p-value, saturation, rejected."""
    if result.get("throughput") is None:
        raise missing_field(where, "result.throughput", "a mapping with a median")
    check_block(result["throughput"], where, "result.throughput")
    if result.get("baseline_throughput") is not None:
        check_block(result["baseline_throughput"], where, "result.baseline_throughput")
    _fields(result, where, "result.", _RESULT_RULES)
    for key in ("first_steps", "baseline_first_steps"):
        _fields(_mapping(result, key, where, f"result.{key}"), where, f"result.{key}.",
                _FIRST_STEPS_RULES)
    advice = result.get("advice")
    if advice is not None and not (isinstance(advice, list) and all(is_text(a) for a in advice)):
        raise bad_field(where, "result.advice", advice, "a list of lines of text")
    rejected = _mapping(result, "rejected", where, "result.rejected")
    _fields(rejected, where, "result.rejected.", _REJECTED_RULES)
    if rejected.get("settings") is not None:
        if not isinstance(rejected["settings"], dict):
            raise bad_field(where, "result.rejected.settings", rejected["settings"],
                            "a mapping of settings")
        check_settings(rejected["settings"], where, "result.rejected.settings")


# per_process holds one value per validation round (at most the round cap, a few dozen); the
# significance tests over it grow with its length (400 values took compare 7 s, 64 take 3 s)
MAX_PROCESSES = 64


def check_block(block: Any, where: str, name: str) -> None:
    """A throughput block: validated (``per_process``) or one search trial (no per_process)."""
    if not isinstance(block, dict):
        raise bad_field(where, name, block, "a mapping with a median")
    if block.get("median") is None:
        raise missing_field(where, name + ".median", POSITIVE)
    _fields(block, where, name + ".", _BLOCK_RULES)
    per_process = block.get("per_process")
    if per_process is not None and not (
            isinstance(per_process, list) and 0 < len(per_process) <= MAX_PROCESSES
            and all(_positive(v) for v in per_process)):
        raise bad_field(where, name + ".per_process", per_process,
                        f"a list of 1 to {MAX_PROCESSES} positive numbers")


def check_machine(machine: dict[str, Any], where: str) -> None:
    """The machine facts show and compare display (a study records more, nested, facts)."""
    for key in ("arch", "cpu_model", "tf_version", "hostname"):
        value = machine.get(key)
        if value is not None and not is_scalar(value):
            raise bad_field(where, f"machine.{key}", value, TEXT)
    _fields(machine, where, "machine.", tuple(
        (key, is_count, COUNT) for key in ("visible_cpus", "usable_cpus", "physical_cores",
                                           "sockets", "numa_nodes")))


def check_settings(settings: dict[str, Any], where: str, name: str) -> None:
    """The types of a settings mapping, in the tuned file's layout or a study's flat one: thread
    counts, tf.data options, environment, process placement and declared knobs. Each knob's own
    rule for its value is the tuned-file reader's business, not the display's."""
    for key, value in settings.items():
        field_name = f"{name}.{key}"
        if not is_text(key):
            raise bad_field(where, name, key, "setting names that are one line of text")
        if key in THREAD_COUNTS:
            if value is not None and not is_count(value):
                raise bad_field(where, field_name, value, COUNT + " (0: TensorFlow decides)")
        elif key in ("tf_data", "env", "knobs"):
            _scalars(value, where, field_name, nested=key == "tf_data")
        elif key == "cpus":
            ok = value is None or is_count(value) or (  # a study records the count
                isinstance(value, list) and all(is_count(c) for c in value))
            if not ok:
                raise bad_field(where, field_name, value, "a list of CPU numbers")
        elif key == "instances":
            _instances(value, where, field_name)
        elif not is_scalar(value):
            raise bad_field(where, field_name, value, "a number, text, true/false or null")


def _scalars(value: Any, where: str, name: str, *, nested: bool) -> None:
    """A mapping of names to plain values (tf.data: one level of sub-mappings too)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise bad_field(where, name, value, "a mapping")
    for key, item in value.items():
        if not is_text(key):
            raise bad_field(where, name, key, "names that are one line of text")
        if nested and isinstance(item, dict):
            _scalars(item, where, f"{name}.{key}", nested=False)
        elif not is_scalar(item):
            raise bad_field(where, f"{name}.{key}", item, "a number, text, true/false or null")


def _instances(value: Any, where: str, name: str) -> None:
    if value is None or (is_count(value) and value >= 1):
        return
    if not isinstance(value, dict):
        raise bad_field(where, name, value, "an instance count or a mapping with count and cpus")
    count, cpus = value.get("count"), value.get("cpus")
    if count is not None and not (is_count(count) and count >= 1):
        raise bad_field(where, name + ".count", count, "an integer >= 1")
    if cpus is not None and not (isinstance(cpus, list) and all(
            isinstance(s, list) and all(is_count(c) for c in s) for s in cpus)):
        raise bad_field(where, name + ".cpus", cpus, "a list of CPU lists, one per instance")


def workload_text(w: dict[str, Any]) -> str:
    """``model / data, mode, batch size N``, leaving out what was not recorded (a model file's
    generated inputs, a study another tool made): never ``None``."""
    if not any(w.get(k) is not None for k in ("model", "data", "mode", "batch_size")):
        return "not recorded (a study another tool made?)"
    parts = [" / ".join(str(w[k]) for k in ("model", "data") if w.get(k) is not None)
             or "(no model)"]
    if w.get("mode") is not None:
        parts.append(str(w["mode"]))
    if w.get("batch_size") is not None:
        parts.append(f"batch size {w['batch_size']}")
    return plain(", ".join(parts))
