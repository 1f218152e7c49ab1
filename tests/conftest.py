from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own working directory (results/ lands there) and its own host lock, so
    tests never wait on, or disturb, a real search running on the same machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNER_LOCK_FILE", str(tmp_path / "measure.lock"))
    for name in ("FAKE_BEHAVIOUR", "FAKE_SHAPE", "FAKE_NOISE", "FAKE_WINDOW_SLEEP", "TUNER_WORKER",
                 "FAKE_TF_DATA", "FAKE_PIPELINE", "FAKE_KNOB_DEFAULTS", "KNOB_RECORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_worker(monkeypatch):
    monkeypatch.setenv("TUNER_WORKER", f"{sys.executable} {HERE / 'fake_worker.py'}")


@pytest.fixture
def write_config(tmp_path):
    """Write a config next to a dummy workload module; returns the config path."""
    module = tmp_path / "wl.py"
    module.write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")

    def write(body: str | None = None, name: str = "study.yaml", **_: object) -> Path:
        path = tmp_path / name
        text = body if body is not None else FAST
        path.write_text(textwrap.dedent(text))
        return path

    return write


FAST = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: 8
  trial_timeout: 20
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 3
validate:
  candidates: 2
  screen_rounds: 1
  rounds: 5
"""
