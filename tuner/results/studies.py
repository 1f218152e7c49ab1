"""Results read from a study: opened read-only (never migrated or created), its trials checked one
by one (a damaged trial is an error row), the last validated result -> ``Result``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tuner.base.render import did_you_mean, plain, quoted
from tuner.base.urls import mask_secret, mask_url, masked
from tuner.base.yamlsafe import shown
from tuner.errors import ConfigError, StudyError, TunerError
from tuner.results.checks import (
    VERDICTS,
    WORKLOAD_RULES,
    _fields,
    _mapping,
    _positive,
    bad_field,
    check_machine,
    check_result,
    check_settings,
    is_text,
    missing_field,
    non_negative,
)
from tuner.results.model import Result, from_result_doc, tuned_summary
from tuner.tuned.store import BASELINE, EXPERT
from tuner.tuned.store import STUDY_ATTR_PREFIX as ATTR

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
    if tp.get("rel_spread") is not None and not non_negative(tp["rel_spread"]):
        return f"throughput.rel_spread: expected a number >= 0, got {shown(tp['rel_spread'])}"
    saturation = attrs.get("cpu_saturation")
    if saturation is not None and not non_negative(saturation):
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
    _fields(workload, where, ATTR + "config.workload.", WORKLOAD_RULES)
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
    import tuner.knobs as knobs

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
    summary = {"tuned": tuned_summary(result),
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


def _trial_block(t: Any) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"median": t.user_attrs["throughput"]["median"]}
