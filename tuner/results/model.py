"""One results model: a tuned result read into one plain shape (:class:`Result`) whether it comes
from a tuned file or from a study in Optuna storage, so ``show``, ``compare`` and ``report`` treat
them alike.

A study is read once into a :class:`StudyRecord` (what the search recorded on the study and its
trials); ``report`` lays out its trials, and :func:`from_study` turns it into a :class:`Result`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.results.checks import BUDGET_KEYS, THREAD_COUNTS, bad_field, check_document, is_number
from tuner.tuned import store

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
        return store.rounded(doc)


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
        summary = tuned_summary(result)   # never a speedup the file's own result contradicts
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
    import tuner.knobs as knobs
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


def tuned_summary(result: dict[str, Any]) -> str:
    """The tuned file's summary line, for a study's recorded result."""
    try:
        lo, hi = result["speedup_ci95"]
        return (f"{result['speedup']:.3f}x faster than TensorFlow's defaults (95% CI "
                f"{lo:.3f}-{hi:.3f}, p={result['p_value']:.3g})")
    except (KeyError, TypeError, ValueError):
        return "faster than TensorFlow's defaults (validated)"
