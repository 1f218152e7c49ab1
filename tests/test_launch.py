"""``python -m tuner run`` and ``export``: what they say about settings the environment cannot
carry (the launcher's processes are tested in test_production.py)."""

from __future__ import annotations

from helpers import settings_doc

from tuner.production import launch


def test_launcher_and_export_note_what_the_environment_cannot_carry():
    doc = settings_doc(tf_data={"private_threadpool_size": 2, "autotune": {"enabled": False}},
               knobs={"map_parallelism": "autotune"})
    note = launch.tf_data_note(doc)
    assert note.startswith("tf.data settings (private_threadpool_size=2, autotune.enabled=false) "
                           "cannot be set from the environment")
    assert "declared knobs (map_parallelism=autotune) are the job's own arguments: pass " \
           "cfg.knobs[name]" in note
    assert launch.tf_data_note(settings_doc()) is None
