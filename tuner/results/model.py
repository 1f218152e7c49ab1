"""One results model: a tuned result read into one plain shape (:class:`Result`) whether it comes
from a tuned file or from a study in Optuna storage, so ``show``, ``compare`` and ``report`` treat
them alike.

A study is read once into a :class:`StudyRecord` (what the search recorded on the study and its
trials); ``report`` lays out its trials, and :func:`from_study` turns it into a :class:`Result`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tuner.base.render import did_you_mean, plain, quoted
from tuner.base.urls import mask_secret, mask_url, masked
from tuner.base.yamlsafe import shown
from tuner.errors import ConfigError, StudyError, TunerError
from tuner.tuned import store as tuned
from tuner.tuned.store import BASELINE, EXPERT
from tuner.tuned.store import STUDY_ATTR_PREFIX as ATTR

WORKLOAD_KEYS = ("model", "data", "mode", "batch_size")


@dataclass
class Result:
    """One tuned result, from a tuned file or a study, in the shape show and compare use."""

    label: str
    source: dict[str, Any]
    verdict: str
    summary: str
    settings: dict[str, Any]             # flat knob names, as in Optuna
    machine: dict[str, Any]
    workload: dict[str, Any]
    throughput: dict[str, Any] | None    # median, ci95, per_process
    baseline: dict[str, Any] | None
    speedup: float | None
    speedup_ci95: list[float] | None
    p_value: float | None
    cpu_saturation: float | None
    baseline_cpu_saturation: float | None
    evidence: str
    study: dict[str, Any]
    created: str | None
    rejected: dict[str, Any] | None = None
    expert: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    budget: dict[str, Any] | None = None   # search.budget: how a --budget was spent
    # what the first steps of a process cost (tracing, XLA's compilation), adopted and baseline
    first_steps: dict[str, Any] | None = None
    baseline_first_steps: dict[str, Any] | None = None
    advice: list[str] = field(default_factory=list)   # what a file cannot carry (jit_compile)
    # result.accuracy: the accuracy guard's deviation of these settings (format_version 2)
    accuracy: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if doc["budget"] is None:   # only a run with --budget has one
            del doc["budget"]
        for key in ("first_steps", "baseline_first_steps"):
            if doc[key] is None:    # only files from this version on have them
                del doc[key]
        if not doc["advice"]:
            del doc["advice"]
        if doc["accuracy"] is None:   # only files of format_version 2 have one
            del doc["accuracy"]
        return tuned.rounded(doc)


# -- from a tuned file -------------------------------------------------------------------------


def from_tuned_file(path: str | Path) -> Result:
    """The file through the strict reader every command uses (an unvalidated file is shown, and
    labelled so), then its result fields checked for display."""
    from tuner.tuned import reader as tunedfile

    doc = tunedfile.read(path, allow_unvalidated=True, use=False).doc
    out = from_result_doc(doc, label=str(path), source={"kind": "tuned file", "path": str(path)},
                          where=str(path))
    problem = tunedfile.evidence_problem(doc)
    if problem:
        # what run, export and apply() refuse: shown, with the file's own numbers only
        out.summary = f"the evidence does not support the verdict: {problem}"
        out.notes.append(f"run, export and apply() refuse this file as not validated ({problem})")
    try:
        tunedfile.check_declared_space(doc["settings"], tunedfile.declared_space(doc, str(path)),
                                       str(path))
    except ConfigError as exc:
        why = str(exc)[len(str(path)) + 2:]
        out.notes.append(f"run, export and apply() refuse this file: {why}")
    return out


def from_result_doc(doc: dict[str, Any], *, label: str, source: dict[str, Any],
                    where: str) -> Result:
    """A :class:`Result` from a tuned file's content (``where`` names it in errors). Every field
    that is displayed is checked first (:func:`check_document`), so a damaged file is one error
    line naming the field, never a traceback."""
    from tuner.knobs import settings as settings_mod

    check_document(doc, where)
    result = doc["result"]
    verdict = doc["verdict"]
    throughput = _block(result["throughput"])
    baseline = _block(result.get("baseline_throughput"))
    search = doc.get("search") or {}
    expert_doc = search.get("expert_rule") or {}
    expert = None
    if expert_doc.get("settings"):
        measured = _block(expert_doc.get("throughput"))
        expert = {"settings": _flat(expert_doc["settings"]),
                  "speedup_in_search": expert_doc.get("speedup_in_search"),
                  # its search trial's median: measured even when no baseline trial completed
                  "throughput_in_search": measured["median"] if measured else None}
    study = doc.get("study") or {}
    budget = search.get("budget")
    rejected = result.get("rejected")
    if rejected and rejected.get("settings"):
        rejected = {**rejected, "settings": _flat(rejected["settings"])}
    created = doc.get("created")
    workload = doc.get("workload") or {}
    summary = doc.get("summary") or ""
    speedup = result.get("speedup")
    if verdict == "tuned" and speedup is not None and f"{speedup:.3f}x" not in summary:
        summary = _tuned_summary(result)   # never a speedup the file's own result contradicts
    return Result(
        label=label, source=source, verdict=verdict, summary=summary,
        settings=_flat(doc["settings"]),
        machine=dict(doc.get("machine") or {}),
        workload={k: workload.get(k) for k in WORKLOAD_KEYS},
        throughput=throughput, baseline=baseline,
        # a defaults file's settings are the baseline: no speedup of its own. Its result holds
        # the rejected candidate's numbers (format 1 files before #24 held 1.0, [1, 1] and 1.0
        # there, made up), shown from result.rejected
        **({"speedup": None, "speedup_ci95": None, "p_value": None} if verdict == "defaults"
           else {"speedup": result.get("speedup"), "speedup_ci95": result.get("speedup_ci95"),
                 "p_value": result.get("p_value")}),
        cpu_saturation=result.get("cpu_saturation"),
        baseline_cpu_saturation=result.get("baseline_cpu_saturation"),
        evidence=_evidence(throughput, verdict),
        study={k: study.get(k) for k in ("name", "storage", "n_trials", "complete", "pruned",
                                         "fail")},
        # an unquoted timestamp in a hand-edited file reads as a datetime
        created=created.isoformat() if isinstance(created, (date, datetime)) else created,
        rejected=rejected or None, expert=expert, notes=settings_mod.notes(doc["settings"]),
        budget={k: budget.get(k) for k in BUDGET_KEYS} if budget else None,
        first_steps=result.get("first_steps"),
        baseline_first_steps=result.get("baseline_first_steps"),
        advice=list(result.get("advice") or []),
        accuracy=_accuracy(result.get("accuracy"), where))


ACCURACY_KEYS = ("metric", "tolerance", "deviation", "limit", "samples")


def _accuracy(block: Any, where: str) -> dict[str, Any] | None:
    """result.accuracy, checked for display: numbers (or null) and a known metric."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise bad_field(where, "result.accuracy", block, "a mapping")
    if block.get("metric") not in ("rel_l2", "max_abs", "top1"):
        raise bad_field(where, "result.accuracy.metric", block.get("metric"),
                        "rel_l2, max_abs or top1")
    for key in ACCURACY_KEYS[1:]:
        value = block.get(key)
        if value is not None and not is_number(value):
            raise bad_field(where, f"result.accuracy.{key}", value, "a finite number or null")
    return {k: block.get(k) for k in ACCURACY_KEYS}


def accuracy_text(block: dict[str, Any] | None) -> str:
    """The accuracy guard's result in one line: ``rel_l2 0.0017 (tolerance 0.05, 16 samples)``
    or, without a tolerance, against the float-noise limit."""
    if not block:
        return "-"
    deviation = block.get("deviation")
    shown = f"{deviation:.3g}" if isinstance(deviation, (int, float)) else "not measured"
    limit = block.get("limit")
    bound = f"{limit:g}" if isinstance(limit, (int, float)) else "?"
    within = (f"tolerance {block['tolerance']:g}" if block.get("tolerance") is not None
              else f"float-noise limit {bound}")
    samples = f", {block['samples']} samples" if block.get("samples") else ""
    return f"{block.get('metric')} {shown} ({within}{samples})"


# -- checking a result document ------------------------------------------------------------------
#
# Plain functions over the parsed YAML: each raises ConfigError naming the file, the field, the
# value found and what was expected. They check what show and compare display and compute with
# (types, finite numbers, one-line text), not a knob's own rule for its value.

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


def _non_negative(v: Any) -> bool:
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
    ("cpu_saturation", _non_negative, "a number >= 0"),
    ("baseline_cpu_saturation", _non_negative, "a number >= 0"),
    ("carried_by", lambda v: isinstance(v, list) and all(is_text(x) for x in v),
     "a list of knob names"),
)
_REJECTED_RULES = (("trial", is_count, COUNT), *_RESULT_RULES[:3],
                   ("rejected_because", is_text, TEXT))
_BLOCK_RULES = (("median", _positive, POSITIVE), ("ci95", is_interval, INTERVAL))
_FIRST_STEPS_RULES = (("steps", is_count, COUNT),
                      ("seconds", _non_negative, "a number >= 0"),
                      ("extra_seconds", _non_negative, "a number >= 0"),
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
_WORKLOAD_RULES = (("model", is_text, TEXT), ("data", is_text, TEXT), ("mode", is_text, TEXT),
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
    _fields(_mapping(doc, "workload", where, "workload"), where, "workload.", _WORKLOAD_RULES)
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


# -- the shapes show and compare use ----------------------------------------------------------


def _block(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checked throughput block: validated (per_process) or a single search trial."""
    if raw is None:
        return None
    per_process = raw.get("per_process")
    if per_process is None:  # an unvalidated file: one search trial, one process
        return {"median": float(raw["median"]), "ci95": None, "per_process": [float(raw["median"])],
                "processes": 1}
    return {"median": float(raw["median"]), "ci95": raw.get("ci95"),
            "per_process": [float(v) for v in per_process], "processes": len(per_process)}


def _evidence(throughput: dict[str, Any] | None, verdict: str) -> str:
    if verdict == "unvalidated" or throughput is None or throughput["processes"] < 2:
        return "one search trial (one process; not validated)"
    return (f"validation: {throughput['processes']} fresh processes, interleaved with "
            f"TensorFlow's defaults")


def _flat(settings: dict[str, Any]) -> dict[str, Any]:
    from tuner import knobs
    from tuner.knobs import settings as settings_mod

    # the tuned file nests (tf_data:, env:); a study stores the flat knob names
    if any(name in knobs.KNOBS and "." in name for name in settings):
        flat = {**knobs.default_settings(), **settings}
    else:
        flat = settings_mod.flatten(settings)
        # a thread count the file does not set is left to TensorFlow: shown as not set, not as
        # the 0 that flattening fills in
        flat.update({name: None for name in THREAD_COUNTS if settings.get(name) is None})
    # the newer knobs (allocator, CPU set, instances, OpenMP, tf.data options) only where they
    # are set; declared knobs always
    return {k: v for k, v in flat.items() if k not in knobs.KNOBS
            or knobs.KNOBS[k].always_shown or v != knobs.KNOBS[k].default}


# -- from a study ------------------------------------------------------------------------------


# What Optuna's RDB storage holds once it has set a database up. Optuna would create (and stamp)
# whatever is missing, so a database without all of them is not handed to it.
OPTUNA_TABLES = ("studies", "trials", "version_info", "alembic_version")


def read_only_url(storage: str) -> str:
    """``storage`` for reading only: an SQLite file opened with ``mode=ro`` (SQLite refuses every
    write); other databases as they are (see :func:`open_read_only`)."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    url = make_url(storage)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or url.query.get("uri") == "true":
        return storage
    return url.set(database="file:" + quote(url.database, safe="/"),
                   query={**url.query, "mode": "ro", "uri": "true"}
                   ).render_as_string(hide_password=False)


def open_read_only(storage: str) -> Any:
    """Optuna's storage over an existing tuner database, opened so that reading it writes
    nothing: never creates tables, never stamps a schema version. A database without Optuna's
    tables (an application's own, a typo in the URL) is refused before Optuna sees it."""
    import optuna
    import sqlalchemy

    from tuner.search.shared import engine_kwargs

    try:
        from sqlalchemy.engine import make_url

        backend = make_url(storage).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(f"--storage: {masked(storage)!r} is not a storage URL; expected "
                          f"e.g. sqlite:///results/study.db or "
                          f"postgresql://user:password@host/db") from None
    if backend == "sqlite":
        path = make_url(storage).database
        if path and path != ":memory:" and not os.path.isfile(path):
            raise ConfigError(f"--storage: {masked(storage)}: no such database file "
                              f"({path!r})")
    url = read_only_url(storage)
    kwargs = engine_kwargs(storage)
    if backend == "postgresql":
        # every transaction of these sessions is read-only: the server refuses any write
        connect_args = dict(kwargs.get("connect_args") or {})
        connect_args["options"] = (connect_args.get("options", "") +
                                   " -c default_transaction_read_only=on").strip()
        kwargs["connect_args"] = connect_args
    try:
        engine = sqlalchemy.create_engine(url, **kwargs)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
        missing = [t for t in OPTUNA_TABLES if t not in tables]
        if missing:
            what = ("it has no Optuna tables" if len(missing) == len(OPTUNA_TABLES) else
                    f"Optuna's tables {', '.join(missing)} are missing")
            raise ConfigError(f"--storage: {masked(storage)}: no tuner study here ({what}); "
                              f"check the URL")
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)
    except TunerError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; all mean "cannot open it"
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip()
        first = text.splitlines()[0] if text else type(orig).__name__
        raise StudyError(f"--storage: cannot open {masked(storage)}: "
                         f"{mask_secret(first, storage)}") from None


def open_study(storage: str, name: str | None) -> Any:
    """Load an existing study, read-only: never creates a database, a table or a study. Without
    ``name``, the storage's only study."""
    import optuna

    rdb = open_read_only(storage)
    try:
        names = optuna.get_all_study_names(storage=rdb)
    except Exception as exc:  # noqa: BLE001 - as in open_read_only
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"--storage: cannot open {masked(storage)}: "
                         f"{mask_secret(first, storage)}") from None
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"--study-name: required, {masked(storage)} holds "
                              f"{len(names)} studies: {_names(names)}")
        name = names[0]
    if name not in names:
        raise ConfigError(f"--study-name: no study {quoted(name)} in {masked(storage)}"
                          f"{did_you_mean(name, names)}; available: "
                          f"{_names(names)}")
    return optuna.load_study(study_name=name, storage=rdb)


def _names(names: list[str]) -> str:
    """A storage's study names for a message: each one line and inert (a name is anyone's text
    in a shared database)."""
    from tuner.base.render import plain

    return ", ".join(plain(n) for n in names) or "none"


@dataclass
class StudyRecord:
    """What a search recorded on a study: its attributes, read once, and its trials."""

    name: str
    storage: str                          # the URL, password masked
    machine: dict[str, Any]
    workload: dict[str, Any]              # the config's model, data and mode
    last_result: dict[str, Any] | None    # the last validated result a search wrote
    created: str | None
    trials: list[Any]                     # optuna FrozenTrials, in number order
    study: Any = field(repr=False)        # the optuna.Study, for Optuna's own plots

    def counts(self) -> dict[str, int]:
        """Trials per state: complete, pruned, fail, running, waiting."""
        from optuna.trial import TrialState

        return {s.name.lower(): sum(1 for t in self.trials if t.state == s)
                for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                          TrialState.RUNNING, TrialState.WAITING)}

    def measured(self) -> list[Any]:
        """The complete trials that carry a measurement, readable (:func:`trial_problem`)."""
        from optuna.trial import TrialState

        return [t for t in self.trials
                if t.state == TrialState.COMPLETE and "throughput" in t.user_attrs
                and trial_problem(t) is None]


def trial_problem(t: Any) -> str | None:
    """Why a trial's record cannot be read as a measurement (a study is data, typed like a tuned
    file), or None. ``report`` shows such a trial as an error row; ``show`` and ``compare``
    leave it out. A zero or negative throughput or score is such an error."""
    from optuna.trial import TrialState

    attrs = t.user_attrs
    role = attrs.get("role")
    if role is not None and not is_text(role):
        return f"role: expected one line of text, got {shown(role)}"
    settings = attrs.get("settings")
    if settings is None:
        settings = dict(t.params)   # what report shows when no settings were recorded
    if settings is not None:
        if not isinstance(settings, dict):
            return f"settings: expected a mapping, got {shown(settings)}"
        try:
            check_settings(settings, "", "settings")
        except ConfigError as exc:
            return str(exc)[2:]
    for key in ("fail_reason", "prune_reason"):
        if attrs.get(key) is not None and not isinstance(attrs[key], str):
            return f"{key}: expected text, got {shown(attrs[key])}"
    if t.state != TrialState.COMPLETE or "throughput" not in attrs:
        return None
    tp = attrs["throughput"]
    if not isinstance(tp, dict) or not _positive(tp.get("median")):
        median = tp.get("median") if isinstance(tp, dict) else tp
        return f"throughput.median: expected a positive number, got {shown(median)}"
    if tp.get("rel_spread") is not None and not _non_negative(tp["rel_spread"]):
        return f"throughput.rel_spread: expected a number >= 0, got {shown(tp['rel_spread'])}"
    saturation = attrs.get("cpu_saturation")
    if saturation is not None and not _non_negative(saturation):
        return f"cpu_saturation: expected a number >= 0, got {shown(saturation)}"
    if not _positive(t.value):
        return f"value: expected a positive score, got {shown(t.value)}"
    return None


def read_study(storage: str, name: str | None) -> StudyRecord:
    study = open_study(storage, name)
    attrs = study.user_attrs
    where = f"study {shown(study.study_name)}"
    config = _mapping(attrs, ATTR + "config", where, ATTR + "config")
    machine = attrs.get(ATTR + "machine_full") or attrs.get(ATTR + "machine") or {}
    if not isinstance(machine, dict):
        raise bad_field(where, ATTR + "machine", machine, "a mapping")
    check_machine(machine, where)
    workload = _mapping(config, "workload", where, ATTR + "config.workload")
    _fields(workload, where, ATTR + "config.workload.", _WORKLOAD_RULES)
    last = attrs.get(ATTR + "last_result")
    if last is not None:
        check_last_result(last, where)
    return StudyRecord(
        name=study.study_name, storage=mask_url(storage), machine=machine, workload=workload,
        last_result=last, created=attrs.get(ATTR + "created"),
        trials=study.get_trials(deepcopy=False), study=study)


def check_last_result(last: Any, where: str) -> None:
    """The validated result a search recorded on its study (what report and show read)."""
    name = ATTR + "last_result"
    if not isinstance(last, dict):
        raise bad_field(where, name, last, "a mapping")
    if last.get("verdict") not in VERDICTS:
        raise bad_field(where, name + ".verdict", last.get("verdict"),
                        "one of " + ", ".join(VERDICTS))
    result = _mapping(last, "result", where, name + ".result", required=True)
    check_result(result, f"{where}: {name}")
    if last["verdict"] == "tuned":
        for key in ("speedup", "speedup_ci95", "p_value"):
            if result.get(key) is None:
                raise missing_field(where, f"{name}.result.{key}", "the validated numbers")
    if last.get("settings") is not None:
        check_settings(_mapping(last, "settings", where, name + ".settings"), where,
                       name + ".settings")


def from_study(storage: str, name: str | None) -> Result:
    """A :class:`Result` from a study: the validated result its last search recorded
    (``tuner.last_result``), else the best trial against the baseline trial (unvalidated)."""
    from tuner import knobs

    record = read_study(storage, name)
    where = f"study {shown(record.name)}"
    complete = record.measured()
    if not complete:
        raise ConfigError(f"--study-name: {where} has no complete trial to show")
    by_role = {t.user_attrs.get("role"): t for t in complete if t.user_attrs.get("role")}
    best = max(complete, key=lambda t: t.value)
    counts = record.counts()
    base, expert = by_role.get(BASELINE), by_role.get(EXPERT)
    notes: list[str] = []
    last = record.last_result
    if isinstance(last, dict) and isinstance(last.get("result"), dict):
        verdict, result = last.get("verdict"), last["result"]
        settings = last.get("settings")
        if settings is None and verdict == "defaults":
            settings = knobs.default_settings()
        # a study is data, not instructions: its "output" (where the search wrote its tuned
        # file) is never opened, whatever path it names
        if settings is None:
            settings = best.user_attrs.get("settings", best.params)
            notes.append(f"this study predates recording the validated settings: showing the best "
                         f"search trial's (#{best.number}), which is usually the winner")
        created = last.get("written")
    else:
        verdict, created = "unvalidated", record.created
        settings = best.user_attrs.get("settings", best.params)
        result = {"throughput": _trial_block(best),
                  "baseline_throughput": _trial_block(base) if base else None,
                  "speedup": best.value / base.value if base else None,
                  "cpu_saturation": best.user_attrs.get("cpu_saturation")}
        notes.append("no search of this study finished validation: the numbers are single search "
                     "trials (one process each)")
    summary = {"tuned": _tuned_summary(result),
               "defaults": "no configuration was faster than TensorFlow's defaults beyond noise; "
                           "keeping the defaults",
               "unvalidated": "best search trial so far, not validated"}.get(verdict, "")
    doc = {
        "verdict": verdict, "summary": summary, "settings": settings,
        "machine": record.machine,
        "workload": {**record.workload, "batch_size": best.user_attrs.get("batch_size")},
        "result": result, "created": created,
        "search": {"expert_rule": {
            "settings": expert.user_attrs.get("settings") if expert else None,
            "throughput": _trial_block(expert),
            "speedup_in_search": expert.value / base.value if expert and base else None}},
        "study": {"name": record.name, "storage": record.storage,
                  "n_trials": len(record.trials),
                  **{k: counts[k] for k in ("complete", "pruned", "fail")}},
    }
    out = from_result_doc(doc, label=f"study {record.name}",
                          source={"kind": "study", "name": record.name,
                                  "storage": record.storage}, where=where)
    out.notes += notes
    return out


def _tuned_summary(result: dict[str, Any]) -> str:
    """The tuned file's summary line, for a study's recorded result."""
    try:
        lo, hi = result["speedup_ci95"]
        return (f"{result['speedup']:.3f}x faster than TensorFlow's defaults (95% CI "
                f"{lo:.3f}-{hi:.3f}, p={result['p_value']:.3g})")
    except (KeyError, TypeError, ValueError):
        return "faster than TensorFlow's defaults (validated)"


def _trial_block(t: Any) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"median": t.user_attrs["throughput"]["median"]}
