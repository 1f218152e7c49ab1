"""The accuracy guard and reduced precision with real TensorFlow in real children: oneDNN's
math mode reaches the child (its outputs move beyond float noise on a CPU with bfloat16), fp32
changes stay within float noise, the train-mode guard compares the loss, and production
(tuner.apply(), the launcher) carries the settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from helpers import copy_workloads, evidence, skip_without_tensorflow

from tuner import config, knobs
from tuner.base import host
from tuner.child import guard
from tuner.search import measuring

skip_without_tensorflow()
pytestmark = pytest.mark.tf

FPMATH = "env.ONEDNN_DEFAULT_FPMATH_MODE"
BF16_CPU = bool(host.detect().cpu_flags & {"avx512_bf16", "amx_bf16"})
needs_bf16 = pytest.mark.skipif(not BF16_CPU, reason="this CPU has no bfloat16 instructions")

QUICK = """\
search: {{trial_timeout: 120}}
measure: {{warmup_seconds: 0.2, window_seconds: 0.2, windows: 2}}
accuracy: {accuracy}
"""


def _measurer(tmp_path, model, data, mode, accuracy):
    copy_workloads(tmp_path, "tiny.py")
    path = tmp_path / "real.yaml"
    path.write_text(f"workload: {{model: {model}, data: {data}, mode: {mode}}}\n"
                    + QUICK.format(accuracy=accuracy))
    cfg = config.load(path)
    pre = measuring.Measurer(cfg, host.detect(), lambda line: None).preflight()
    return measuring.Measurer(cfg, pre.machine, lambda line: None, guard=pre.guard), pre


def _deviation(measurer, **changes):
    return measurer.measure({**knobs.default_settings(), **changes})["accuracy"]


@needs_bf16
def test_bf16_moves_the_outputs_beyond_float_noise_and_fp32_changes_do_not(tmp_path):
    m, pre = _measurer(tmp_path, "tiny.py:build_model", "tiny.py:build_data", "predict",
                       "{tolerance: 0.05}")
    assert pre.guard and pre.result["guard"]["samples"] == 16
    assert FPMATH in pre.space.searched and pre.space.searched[FPMATH][:2] == [None, "BF16"]
    same = _deviation(m)                     # TensorFlow's defaults again, in another process
    assert same["rel_l2"] <= guard.NOISE_REL_L2 and same["top1"] == 1.0   # 4 scores a sample
    threads = _deviation(m, intra_op_parallelism_threads=1)
    assert threads["rel_l2"] <= guard.NOISE_REL_L2
    bf16 = _deviation(m, **{FPMATH: "BF16"})   # the variable reached the child's oneDNN
    assert guard.NOISE_REL_L2 < bf16["rel_l2"] < 0.05, bf16
    assert guard.excess(bf16, "rel_l2", None) > 0 and guard.excess(bf16, "rel_l2", 0.05) < 0


@needs_bf16
def test_the_train_guard_compares_the_loss_from_the_same_seeded_start(tmp_path):
    m, pre = _measurer(tmp_path, "tiny.py:build_trainable", "tiny.py:build_train_data", "train",
                       "{tolerance: 0.05, train: true}")
    assert pre.result["guard"]["outputs"] == [[1]]       # one number: the loss
    same = _deviation(m)["rel_l2"]
    assert same <= 1e-6
    # a loss averages its errors away: bfloat16 moved it 7.8e-5 here (2026-12-02), less than
    # the outputs' 3e-3 but clearly measured; a tolerance judges it (train needs one)
    bf16 = _deviation(m, **{FPMATH: "BF16"})["rel_l2"]
    assert bf16 > 1e-6 and bf16 > 10 * same


def _tuned(tmp_path, settings):
    doc = {"format_version": 2, "verdict": "tuned",
           "settings": {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0,
                        **settings},
           "machine": dict(host.detect().as_dict(), tf_version=host.installed_tf_version()),
           **evidence(accuracy={"metric": "rel_l2", "tolerance": 0.05, "deviation": 0.003,
                                "limit": 0.05, "samples": 16})}
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_bf16
def test_production_carries_the_math_mode_and_apply_the_graph_rewrite(tmp_path):
    path = _tuned(tmp_path, {"env": {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
                             "precision": {"auto_mixed_precision_onednn_bfloat16": True}})
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_DEFAULT_FPMATH_MODE",
                                                            "TF_SET_ONEDNN_FPMATH_MODE")}
    script = ("import json, os, warnings; warnings.simplefilter('ignore'); import tuner; "
              f"cfg = tuner.apply({str(path)!r}); import tensorflow as tf; "
              "print(json.dumps({'env': os.environ.get('ONEDNN_DEFAULT_FPMATH_MODE'), "
              "'rewrite': tf.config.optimizer.get_experimental_options().get("
              "'auto_mixed_precision_onednn_bfloat16'), 'info': cfg.info()['precision']}))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"env": "BF16", "rewrite": True,
                    "info": {"auto_mixed_precision_onednn_bfloat16": True}}
    # the launcher sets the variable, and says the rewrite needs apply()
    run = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                          sys.executable, "-c",
                          "import os; print(os.environ['ONEDNN_DEFAULT_FPMATH_MODE'])"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "BF16"
    assert "not carried: reduced precision" in run.stderr
