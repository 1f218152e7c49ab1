"""One results model: a tuned result read into one plain shape (:class:`Result`) whether it comes
from a tuned file or from a study in Optuna storage, so ``show``, ``compare`` and ``report`` treat
them alike.

A study is read once into a :class:`StudyRecord` (what the search recorded on the study and its
trials); ``report`` lays out its trials, and :func:`from_study` turns it into a :class:`Result`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import tuned
from .errors import ConfigError, StudyError
from .tuned import BASELINE, EXPERT
from .tuned import STUDY_ATTR_PREFIX as ATTR
from .urls import mask_secret, mask_url

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

    def as_json(self) -> dict[str, Any]:
        return tuned.rounded(asdict(self))


# -- from a tuned file -------------------------------------------------------------------------


def from_tuned_file(path: str | Path) -> Result:
    doc = tuned.load(path)
    return from_result_doc(doc, label=str(path), source={"kind": "tuned file", "path": str(path)},
                           where=str(path))


def from_result_doc(doc: dict[str, Any], *, label: str, source: dict[str, Any],
                    where: str) -> Result:
    """A :class:`Result` from a tuned file's content (``where`` names it in errors)."""
    from . import settings as settings_mod

    result = doc.get("result")
    if not isinstance(result, dict):
        raise ConfigError(f"{where}: result: missing or not a mapping")
    verdict = doc.get("verdict")
    if verdict not in ("tuned", "defaults", "unvalidated"):
        raise ConfigError(f"{where}: verdict: {verdict!r} is not one of tuned, defaults, "
                          f"unvalidated")
    throughput = _block(result.get("throughput"), f"{where}: result.throughput")
    if throughput is None:
        raise ConfigError(f"{where}: result.throughput: missing")
    baseline = _block(result.get("baseline_throughput"), f"{where}: result.baseline_throughput")
    search = doc.get("search") or {}
    expert_doc = search.get("expert_rule") or {}
    expert = None
    if expert_doc.get("settings"):
        expert = {"settings": _flat(expert_doc["settings"], where),
                  "speedup_in_search": expert_doc.get("speedup_in_search")}
    study = doc.get("study") or {}
    rejected = result.get("rejected")
    if isinstance(rejected, dict) and rejected.get("settings"):
        rejected = {**rejected, "settings": _flat(rejected["settings"], where)}
    return Result(
        label=label, source=source, verdict=verdict, summary=str(doc.get("summary", "")),
        settings=_flat(doc.get("settings"), where),
        machine=dict(doc.get("machine") or {}),
        workload={k: (doc.get("workload") or {}).get(k) for k in WORKLOAD_KEYS},
        throughput=throughput, baseline=baseline,
        speedup=result.get("speedup"), speedup_ci95=result.get("speedup_ci95"),
        p_value=result.get("p_value"), cpu_saturation=result.get("cpu_saturation"),
        baseline_cpu_saturation=result.get("baseline_cpu_saturation"),
        evidence=_evidence(throughput, verdict),
        study={k: study.get(k) for k in ("name", "storage", "n_trials", "complete", "pruned",
                                         "fail")},
        created=doc.get("created"), rejected=rejected if isinstance(rejected, dict) else None,
        expert=expert, notes=settings_mod.notes(doc.get("settings")))


def _block(raw: Any, where: str) -> dict[str, Any] | None:
    """A throughput block: validated (per_process) or a single search trial (windows)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("median"), (int, float)):
        raise ConfigError(f"{where}: expected a mapping with a numeric median, got {raw!r}")
    per_process = raw.get("per_process")
    if per_process is None:  # an unvalidated file: one search trial, one process
        return {"median": float(raw["median"]), "ci95": None, "per_process": [float(raw["median"])],
                "processes": 1}
    if not isinstance(per_process, list) or not all(isinstance(v, (int, float)) and v > 0
                                                    for v in per_process):
        raise ConfigError(f"{where}.per_process: expected a list of positive numbers, got "
                          f"{per_process!r}")
    return {"median": float(raw["median"]), "ci95": raw.get("ci95"),
            "per_process": [float(v) for v in per_process], "processes": len(per_process)}


def _evidence(throughput: dict[str, Any] | None, verdict: str) -> str:
    if verdict == "unvalidated" or throughput is None or throughput["processes"] < 2:
        return "one search trial (one process; not validated)"
    return (f"validation: {throughput['processes']} fresh processes, interleaved with "
            f"TensorFlow's defaults")


def _flat(settings: Any, where: str) -> dict[str, Any]:
    from . import knobs
    from . import settings as settings_mod

    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: settings: expected a mapping, got {settings!r}")
    # the tuned file nests (tf_data:, env:); a study stores the flat knob names
    if any(name in knobs.KNOBS and "." in name for name in settings):
        flat = {**knobs.default_settings(), **settings}
    else:
        flat = settings_mod.flatten(settings)
    # the newer knobs (allocator, CPU set, instances, OpenMP, tf.data options) only where they
    # are set; declared knobs always
    return {k: v for k, v in flat.items() if k not in knobs.KNOBS
            or knobs.KNOBS[k].always_shown or v != knobs.KNOBS[k].default}


# -- from a study ------------------------------------------------------------------------------


def open_study(storage: str, name: str | None) -> Any:
    """Load an existing study; never creates a database or a study. Without ``name``, the
    storage's only study."""
    import optuna

    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///"):]
        if path and path != ":memory:" and not os.path.isfile(path):
            raise ConfigError(f"--storage: {storage}: no such database file ({path!r})")
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; all mean "cannot open it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"--storage: cannot open {mask_url(storage)}: "
                         f"{mask_secret(first, storage)}") from None
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"--study-name: required, {mask_url(storage)} holds "
                              f"{len(names)} studies: {', '.join(names) or 'none'}")
        name = names[0]
    if name not in names:
        raise ConfigError(f"--study-name: no study {name!r} in {mask_url(storage)}; "
                          f"available: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


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
        """The complete trials that carry a measurement."""
        from optuna.trial import TrialState

        return [t for t in self.trials
                if t.state == TrialState.COMPLETE and "throughput" in t.user_attrs]


def read_study(storage: str, name: str | None) -> StudyRecord:
    study = open_study(storage, name)
    attrs = study.user_attrs
    config = attrs.get(ATTR + "config") or {}
    return StudyRecord(
        name=study.study_name, storage=mask_url(storage),
        machine=attrs.get(ATTR + "machine_full") or attrs.get(ATTR + "machine") or {},
        workload=config.get("workload") or {}, last_result=attrs.get(ATTR + "last_result"),
        created=attrs.get(ATTR + "created"), trials=study.get_trials(deepcopy=False),
        study=study)


def from_study(storage: str, name: str | None) -> Result:
    """A :class:`Result` from a study: the validated result its last search recorded
    (``tuner.last_result``), else the best trial against the baseline trial (unvalidated)."""
    from . import knobs

    record = read_study(storage, name)
    where = f"study {record.name!r}"
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
        if settings is None:
            settings = _settings_from_output(last.get("output"), record.name)
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


def _settings_from_output(output: Any, study_name: str) -> dict[str, Any] | None:
    """The settings in the tuned file the last search wrote, if it is still that study's."""
    if not isinstance(output, str) or not os.path.isfile(output):
        return None
    try:
        doc = tuned.load(output)
    except ConfigError:
        return None
    if (doc.get("study") or {}).get("name") != study_name:
        return None
    return doc["settings"]
