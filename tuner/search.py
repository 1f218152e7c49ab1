"""The ``search`` command: preflight -> study -> validation -> verdict -> tuned file.

1. Detect the machine; preflight the workload once in a child (:mod:`tuner.measuring`), which
   also fixes the space to search.
2. Open or join the Optuna study and run this worker's trials (:mod:`tuner.study`).
3. Re-measure the best few in fresh, interleaved processes against TensorFlow's defaults
   (:mod:`tuner.validate`). With several workers, the last one to finish its trials validates
   and stores the result in the study; the others write their tuned file from it.
4. Decide and write the tuned file (:mod:`tuner.verdict`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import optuna

from . import coord, files, measuring, storage, study, tuned, validate, verdict
from . import host as host_mod
from .config import Config
from .errors import StudyError
from .validate import Validation

# Held shared from before the preflight to the end of a worker's trials, and exclusively to
# validate (see tuner/coord.py).
SEARCH_LOCK = "search"
# per study and machine type: the stored validation, which every worker's tuned file comes from
VALIDATION = coord.ATTR_PREFIX + "validation."


@dataclass
class SearchOutcome:
    tuned_path: str             # where the result went (beside a validated file, if unvalidated)
    tuned: dict[str, Any]
    backup: str | None          # the replaced file's history copy
    interrupted: bool = False
    kept: str | None = None     # the validated file an unvalidated result was not put over
    retired: str | None = None  # history copy of the stale unvalidated file this result superseded


def run(config: Config, say: measuring.Say = measuring.print_line) -> SearchOutcome:
    """Run the whole search for ``config``; see the module docstring."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say it all
    try:
        return _run(config, say)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run(cfg: Config, say: measuring.Say) -> SearchOutcome:
    started = time.monotonic()
    measurer = measuring.Measurer(cfg, host_mod.detect(), say)
    # in seconds, not after the search; the write makes missing folders
    files.check_writable(cfg.output, "--output", "the tuned YAML", make_folders=True)
    tuned.check_replaceable(cfg.output, cfg.study_name, cfg.storage, cfg.force)
    locks = coord.Locks(cfg.storage, cfg.study_name)
    try:
        # Held (shared) from before the preflight to the end of this worker's trials, so a
        # worker started together with others never validates before they have all searched.
        locks.acquire(SEARCH_LOCK, SEARCH_LOCK, shared=True, on_wait=lambda: say(
            "waiting: another worker is validating this study; this one starts after"))
        mark = time.monotonic()
        pre = measurer.preflight()
        seconds = {"preflight": time.monotonic() - mark}
        measurer = measuring.Measurer(cfg, pre.machine, say)
        return _search(measurer, pre, locks, started, seconds)
    except (optuna.exceptions.StorageInternalError, _sqlalchemy_error()) as exc:
        # the database went away mid-run, beyond the retries: one line, never a traceback
        raise storage.cannot_connect(cfg.storage, exc) from None
    finally:
        locks.close()


def _search(measurer: measuring.Measurer, pre: measuring.Preflight, locks: coord.Locks,
            started: float, seconds: dict[str, float]) -> SearchOutcome:
    cfg, say = measurer.config, measurer.say
    st = study.open_study(measurer, pre, locks)
    st.announce()
    timeout = None
    if cfg.search.timeout is not None:
        timeout = cfg.search.timeout - (time.monotonic() - started) - st.validation_estimate
        if timeout <= 0:
            raise StudyError(f"--timeout: {cfg.search.timeout:g} s leaves no time for trials "
                             f"after preflight and validation (~{st.validation_estimate:.0f} "
                             f"s); allow more")
    mark = time.monotonic()
    interrupted = st.run_trials(timeout)
    seconds["trials"] = time.monotonic() - mark
    if interrupted and not st.complete():
        say("no trial of this machine type completed: nothing to write")
        raise KeyboardInterrupt
    if interrupted:
        say("writing the best result so far (not validated)")
    searched = st.searched()
    st.say_best(searched)
    validation = None
    if not interrupted:
        try:
            validation = validate_once(st, locks, seconds)
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted during validation; writing the best result so far (not validated)")
    if validation is not None:
        # other workers of a shared study may have finished trials while this one waited to
        # validate: the file describes the study as it is when written
        searched = st.searched()
    decided = verdict.validated(validation, cfg, pre) if validation is not None \
        else verdict.unvalidated(searched)
    if st.structured is not None and decided.verdict != "defaults":
        decided = dataclasses.replace(decided, result={
            **decided.result, "carried_by": st.carried_by(decided.settings)})
    document = verdict.document(cfg, pre, searched, decided,
                                {**seconds, "total": time.monotonic() - started})
    written = tuned.write(document, cfg.output, study_name=cfg.study_name, storage=cfg.storage,
                          force=cfg.force)
    st.optuna.set_user_attr(coord.ATTR_PREFIX + "last_result", {
        "verdict": document["verdict"], "settings": document["settings"],
        "result": document["result"], "written": coord.now(),
        "output": os.path.abspath(written.path)})
    return SearchOutcome(tuned_path=str(written.path), tuned=document,
                         backup=str(written.backup) if written.backup else None,
                         interrupted=interrupted,
                         kept=str(written.kept) if written.kept else None,
                         retired=str(written.retired) if written.retired else None)


def validate_once(st: study.Study, locks: coord.Locks, seconds: dict[str, float]) -> Validation:
    """Validate, unless a validation stored in the study already covers every complete trial
    of this machine type: then reuse it. Runs under the search lock taken exclusively, so it
    waits until no worker is still running trials (or about to: a worker holds the lock
    shared from its start), and only one worker validates at a time (the others then find
    its result)."""
    cfg, say = st.config, st.say

    def waiting() -> None:
        say("waiting: other workers are still running trials or validating; the last to "
            "finish validates, the others write their tuned file from its result")

    locks.release(SEARCH_LOCK)  # this worker's trials are done
    with locks.holding(SEARCH_LOCK, SEARCH_LOCK, poll=2.0, on_wait=waiting) as waited:
        if waited > 1:
            seconds["waiting_for_workers"] = waited
        st.fail_stale_trials()
        key = VALIDATION + st.machine_id
        record = st.optuna.user_attrs.get(key)
        stored = validate.from_record(record, complete=st.complete_numbers(), config=cfg,
                                      trials=st.optuna.get_trials(deepcopy=False))
        if stored is not None:
            say(f"validation: reusing the validation stored by {record['by']} at "
                f"{record['at']} (it covers all {len(record['complete'])} complete trials of "
                f"this machine type)")
            return stored
        mark = time.monotonic()
        chosen = validate.candidates(st.complete(), st.space.baseline(), cfg)
        leader = st.leader()   # structured: the parsimonious leader alone
        if leader is not None and leader.user_attrs["settings"] != st.space.baseline():
            chosen = [validate.Candidate.of(leader)]
        validation = validate.run(chosen, st.space.baseline(), st.measurer,
                                  validate.replicates(st.complete()))
        seconds["validation"] = time.monotonic() - mark
        st.optuna.set_user_attr(key, validate.record(
            validation, complete=st.complete_numbers(), config=cfg,
            by=f"{coord.host_id()} (pid {os.getpid()})", at=coord.now()))
        return validation


def _sqlalchemy_error() -> type[BaseException]:
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError
