"""The study's database: transient errors retried."""

from __future__ import annotations

import optuna
import sqlalchemy.exc

from tuner.search.storage import RetryingRDBStorage


def test_transient_database_errors_are_retried(monkeypatch, tmp_path):

    calls = []
    original = optuna.storages.RDBStorage.get_all_trials

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            error = sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed the "
                                                                              "connection"))
            raise optuna.exceptions.StorageInternalError("commit failed") from error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_trials", flaky)
    storage = RetryingRDBStorage(f"sqlite:///{tmp_path / 'r.db'}")
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "r")
    assert storage.get_all_trials(study_id) == [] and len(calls) == 2


def test_a_stop_inside_the_pools_connection_reset_prints_no_traceback(capsys):
    # SQLAlchemy logs "Exception during reset or similar" with the traceback when a SIGTERM or
    # Ctrl-C (a KeyboardInterrupt) lands while it returns a connection; the stop is handled
    # (exit 130), so that record is dropped; the pool's other errors still print
    import logging

    from tuner.search import storage

    storage.quiet_stop_in_pool()
    storage.quiet_stop_in_pool()   # once is enough: no second handler
    pool = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
    for exc in (KeyboardInterrupt(), ValueError("the database went away")):
        try:
            raise exc
        except BaseException:
            pool.error("Exception during reset or similar", exc_info=True)
    err = capsys.readouterr().err
    assert "KeyboardInterrupt" not in err
    assert err.count("Exception during reset or similar") == 1
    assert "ValueError: the database went away" in err
