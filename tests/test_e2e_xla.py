"""XLA auto-clustering with real TensorFlow: the setting reaches a measured child (and a user's
own TF_XLA_FLAGS does not reach the baseline), a step really compiles there (TensorFlow logs
"Compiled cluster using XLA!" once per process that compiles), the child reports XLA and the
first steps' cost, and production carries it: ``tuner.apply()`` before TensorFlow starts,
``LateSettingWarning`` after, and the launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import skip_without_tensorflow
from test_production import make_tuned

from tuner import knobs
from tuner.child import meter
from tuner.knobs import settings, space
from tuner.search.trial import run_child

skip_without_tensorflow()
pytestmark = pytest.mark.tf

LEVEL2 = knobs.XLA_VALUES[1]
COMPILED = "Compiled cluster using XLA!"

# elementwise ops XLA's auto-clustering takes on CPU; three calls: the cluster compiles lazily
STEPS = """
import tensorflow as tf
f = tf.function(lambda x: tf.tanh(x) * 2.0 + tf.sin(x) - tf.cos(x) * x)
x = tf.random.normal((64, 64))
for _ in range(3):
    f(x).numpy()
print("done")
"""

WORKLOAD = """
import tensorflow as tf


def build_model():
    inputs = tf.keras.Input((64,))
    x = tf.keras.layers.Lambda(lambda t: tf.tanh(t) * 2.0 + tf.sin(t) - tf.cos(t) * t)(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(8)(x))


def build_data():
    return tf.data.Dataset.from_tensors(tf.random.normal((32, 64)))
"""


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "TF_CPP_MIN_LOG_LEVEL": "0"}   # the compile line is an INFO log
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=180)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in settings.CONTROLLED_ENV and k != "TUNER_TUNED_FILE"}


def test_the_setting_reaches_the_child_and_a_step_compiles():
    # a user's own flags in the parent: the baseline must not see them
    parent = {**os.environ, "TF_XLA_FLAGS": LEVEL2}
    on = settings.child_environment({**knobs.default_settings(), knobs.XLA.name: LEVEL2}, parent)
    off = settings.child_environment(knobs.default_settings(), parent)
    compiled = run(STEPS, on)
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    assert COMPILED in compiled.stderr
    plain = run(STEPS, off)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "done" in plain.stdout and COMPILED not in plain.stderr


def test_a_measured_child_reports_xla_and_its_first_steps(tmp_path, monkeypatch):
    (tmp_path / "wl.py").write_text(WORKLOAD)
    monkeypatch.setenv("TF_XLA_FLAGS", LEVEL2)   # the user's own, in the parent
    task = {"kind": "measure", "usable_cpus": 2, "affinity": [0, 1],
            "workload": {"model": "wl.py:build_model", "data": "wl.py:build_data",
                         "mode": "predict", "base_dir": str(tmp_path)},
            "measure": {"warmup_seconds": 0.2, "min_warmup_steps": 2, "window_seconds": 0.2,
                        "windows": 2}}
    xla = run_child(task, timeout=120,
                    settings={**space.default_settings(), knobs.XLA.name: LEVEL2})
    assert xla["xla"] == {"flags": LEVEL2, "auto_jit": 2, "active": True, "available": True}
    assert xla["first_steps"]["steps"] >= meter.XLA_MIN_STEPS + 1
    assert xla["first_steps"]["extra_seconds"] > 0
    base = run_child(task, timeout=120, settings=space.default_settings())
    assert base["xla"]["flags"] is None and base["xla"]["active"] is False
    assert base["first_steps"]["steps"] >= 1


def test_apply_sets_it_before_tensorflow_starts_and_names_it_when_too_late(tmp_path):
    path = make_tuned(tmp_path, intra=0, inter=0, env={"TF_XLA_FLAGS": LEVEL2})
    early = run(f"import tuner\ncfg = tuner.apply({str(path)!r})\n" + STEPS, clean_env())
    assert early.returncode == 0, early.stderr[-2000:]
    assert COMPILED in early.stderr
    late = run(f"""
        import warnings
        import tensorflow as tf
        import tuner
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tuner.apply({str(path)!r})
        print([(w.category.__name__, str(w.message)) for w in caught])
        """, clean_env())
    assert late.returncode == 0, late.stderr[-2000:]
    assert "LateSettingWarning" in late.stdout and f"env TF_XLA_FLAGS={LEVEL2}" in late.stdout


def test_the_launcher_carries_it(tmp_path):
    path = make_tuned(tmp_path, intra=0, inter=0, env={"TF_XLA_FLAGS": LEVEL2})
    script = tmp_path / "job.py"
    script.write_text(STEPS)
    env = {**clean_env(), "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert COMPILED in proc.stderr
    # the exported shell lines give a job the same variable (every format: test_xla.py)
    export = subprocess.run([sys.executable, "-m", "tuner", "export", str(path)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    shell = export.stdout + 'printf %s "$TF_XLA_FLAGS"\n'
    assert subprocess.run(["bash", "-c", shell], capture_output=True,
                          text=True).stdout == LEVEL2
