"""Model files with real TensorFlow: .keras files and SavedModels built here (a single input, two
named inputs, an int input, an unknown non-batch dimension, a plain tf.Module with a string
input), loaded and fed generated inputs in real children. The models are built in a subprocess,
so this test process never imports TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml
from helpers import assert_one_error_line, run_cli, skip_without_tensorflow

from tuner import config
from tuner.child import protocol
from tuner.config import modelflags as modelfile
from tuner.knobs import space
from tuner.search.trial import run_child

skip_without_tensorflow()
pytestmark = pytest.mark.tf

BUILD = """\
import tensorflow as tf, keras

def save(model, name, compile=False):
    if compile:
        model.compile("sgd", "mse")
    model.save(name)

x = keras.Input((4,), name="x")
save(keras.Model(x, keras.layers.Dense(2)(x)), "single.keras", compile=True)
a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
joined = keras.layers.Concatenate()([keras.layers.Dense(4)(a), b])
save(keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(joined)), "two_named.keras")
ids = keras.Input((6,), dtype="int32", name="ids")
pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(ids))
save(keras.Model(ids, keras.layers.Dense(1)(pooled)), "int_input.keras")
seq = keras.Input((None, 3), name="seq")
save(keras.Model(seq, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(seq))),
     "unknown_dim.keras")

class Plain(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.ones([5, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="features"),
                                  tf.TensorSpec([None], tf.string, name="words")])
    def serve(self, features, words):
        return {"y": features @ self.w + tf.cast(tf.strings.length(words), tf.float32)[:, None]}

plain = Plain()
tf.saved_model.save(plain, "plain_module", signatures={"serving_default": plain.serve,
                                                       "score": plain.serve})
open("broken.keras", "w").write("not a model")
# a legacy .h5 whose Lambda leaves a mark wherever its code runs (here, once, while building)
mark = keras.layers.Lambda(lambda t: (open("LAMBDA_RAN", "w").close(), t)[1], name="mark")
x = keras.Input((4,), name="x")
keras.Model(x, keras.layers.Dense(2)(mark(x))).save("lambda.h5")
import os
os.remove("LAMBDA_RAN")
"""

QUICK = """\
search: {n_trials: 2, trial_timeout: 90}
measure: {warmup_seconds: 0.3, window_seconds: 0.3, windows: 2}
validate: {candidates: 1, rounds: 4, max_rounds: 4}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    proc = subprocess.run([sys.executable, "-c", BUILD], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def preflight(path, **flags):
    cfg, _, _ = modelfile.config_for(modelfile.ModelFlags(model=str(path), **flags))
    task = protocol.task("preflight", cfg.workload, usable_cpus=2, affinity=[0, 1])
    return run_child(task, timeout=120, settings=space.default_settings())


@pytest.mark.parametrize("name,flags,inputs", [
    ("single.keras", {}, [("x", [None, 4], "float32")]),
    ("two_named.keras", {"batch_size": 5}, [("a", [None, 3], "float32"),
                                            ("b", [None, 2], "float32")]),
    ("int_input.keras", {}, [("ids", [None, 6], "int32")]),
    ("unknown_dim.keras", {"input_shapes": ("seq=1x7x3",)}, [("seq", [None, None, 3],
                                                             "float32")]),
    ("plain_module", {"signature": "score"}, [("features", [None, 5], "float32"),
                                              ("words", [None], "string")]),
])
def test_a_model_file_runs_on_inputs_generated_from_its_signature(models, name, flags, inputs):
    result = preflight(models / name, **flags)
    assert result["generated_inputs"] is True
    assert [(i["name"], i["shape"], i["dtype"]) for i in result["inputs"]] == inputs
    assert result["batch_size"] == flags.get("batch_size", 32)
    assert result["pipeline"][-2:] == ["Batch", "Prefetch"]   # a real job's pipeline
    assert result["model_params"] > 0


@pytest.mark.parametrize("argv,needles", [
    (["--model", "unknown_dim.keras"],
     ["--model: workload preflight failed", "input 'seq'", "(None, None, 3)",
      "--input-shape seq=32xNx3"]),
    (["--model", "broken.keras"], ["broken.keras", "not a Keras model file", "zip archive"]),
    (["--model", "plain_module", "--signature", "nope"],
     ["no signature 'nope'", "available: score, serving_default"]),
    (["--model", "two_named.keras", "--input-shape", "c=1x2"], ["has no input 'c'", "a (None, 3)"]),
])
def test_a_model_that_cannot_run_is_one_error_line(models, capsys, monkeypatch, argv, needles):
    monkeypatch.chdir(models)
    code, _, err = run_cli(capsys, "search", *argv)
    assert_one_error_line(code, err, *needles)
    assert not (models / "results").exists()


def test_a_legacy_h5_file_with_a_lambda_layer_is_refused_before_its_code_runs(
        models, capsys, monkeypatch):
    monkeypatch.chdir(models)
    code, _, err = run_cli(capsys, "search", "--model", "lambda.h5")
    assert_one_error_line(code, err, "lambda.h5", "refused", "Lambda layer(s) 'mark'",
                          "save the model as .keras")
    assert not (models / "LAMBDA_RAN").exists()


def test_a_real_search_on_a_model_file_exports_for_tf_serving(models, capsys, monkeypatch):
    path = models / "study.yaml"
    path.write_text(textwrap.dedent("""\
        workload: {model: two_named.keras, batch_size: 4}
        space: {batch_size: [16]}
        """) + QUICK)
    cfg = config.load(path)
    assert cfg.workload.generated
    code, out, err = run_cli(capsys, "search", "--config", str(path))
    assert code == 0, err
    doc = yaml.safe_load(open("results/study/tuned.yaml"))
    assert doc["workload"]["batch_size"] == 4
    # the batch size chosen is one that was measured, and the verdict is the rule's on the
    # numbers the file holds: the validated winner's settings (tuned) or the defaults'
    measured = {r["batch_size"]: r for r in doc["search"]["batch_sizes"]}
    assert 4 in measured and set(measured) <= {4, 16}
    chosen = doc["settings"].get("batch_size", doc["workload"]["batch_size"])
    assert chosen in measured
    result, validation = doc["result"], doc["validation"]
    assert doc["verdict"] in ("tuned", "defaults") and validation["done"]
    if doc["verdict"] == "tuned":
        assert doc["settings"] == validation["winner"]["settings"]
        assert result["p_value"] < validation["alpha"]
        assert result["speedup_ci95"][0] > 1
        assert result["speedup"] >= validation["min_speedup"]
    else:
        assert chosen == 4 and doc["settings"]["intra_op_parallelism_threads"] == 0
        assert result["rejected"]["rejected_because"]
    code, text, err = run_cli(capsys, "export", "results/study/tuned.yaml", "--format",
                              "tf-serving", "--allow-unvalidated")
    assert code == 0, err
    last = text.splitlines()[-1]
    assert "--tensorflow_intra_op_parallelism=" in last
    assert "--tensorflow_inter_op_parallelism=" in last
