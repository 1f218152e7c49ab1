"""The study's database: transient errors retried."""

from __future__ import annotations

import optuna
import sqlalchemy.exc

from tuner.storage import RetryingRDBStorage


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
