"""``search --model`` / ``diagnose --model`` in the parent, the model-file workload section of a
config, the batch-size knob and ``export --format tf-serving``: no TensorFlow here (the fake
worker stands in for the child; the real one is in test_e2e_model_tf.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import (
    assert_one_error_line,
    evidence,
    load_study,
    plain_machine,
    run_cli,
    settings_doc,
)

from tuner import config, knobs
from tuner.config import modelflags as modelfile
from tuner.errors import ConfigError
from tuner.knobs import space
from tuner.production import launch

FAST_MEASURE = """\
search: {n_trials: 2, trial_timeout: 20}
measure: {warmup_seconds: 0, window_seconds: 0.01, windows: 3}
validate: {candidates: 1, screen_rounds: 1, rounds: 4}
"""


@pytest.fixture
def keras_file(tmp_path):
    """A file the parent takes for a Keras model (it only looks at the name: the child loads)."""
    path = tmp_path / "My Model.keras"
    path.write_bytes(b"PK\x03\x04 not really")
    return path


@pytest.fixture
def saved_model(tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    return folder


# -- the one-line contract for a bad path or flag, before any child starts --------------------

@pytest.mark.parametrize("command", ["search", "diagnose", "size"])
def test_a_missing_model_is_one_error_line_and_nothing_written(capsys, command):
    code, out, err = run_cli(capsys, command, "--model", "nowhere/model.keras")
    assert_one_error_line(code, err, "--model", "nowhere/model.keras", "does not exist",
                          ".keras or .h5 file, or a SavedModel directory")
    assert not Path("results").exists()


@pytest.mark.parametrize("make,needle", [
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "is not a model file"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "without saved_model.pb"),
])
def test_a_path_that_is_no_model_is_one_error_line(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    code, _, err = run_cli(capsys, "search", "--model", str(path))
    assert_one_error_line(code, err, "--model", str(path), needle)
    assert not Path("results").exists()


@pytest.mark.parametrize("argv,needles", [
    (["--signature", "serve"], ["--signature", "'serve'", "Keras file"]),
    (["--input-shape", "image"], ["--input-shape", "NAME=DIMS"]),
    (["--input-shape", "image=1x0x3"], ["--input-shape image", "1x0x3", "sizes >= 1"]),
    (["--input-shape", "a=1x2", "--input-shape", "a=1x3"], ["--input-shape", "'a'", "twice"]),
    (["--batch-sizes", "1,x"], ["--batch-sizes", "1,x", "1,8,32,128"]),
    (["--batch-sizes", "8,8"], ["--batch-sizes", "twice"]),
    (["--batch-size", "0"], ["--batch-size", "positive integer"]),
    (["--data", "pipe.py:build", "--batch-size", "8"], ["--batch-size", "with --data"]),
    (["--mode", "train", "--batch-sizes", "1,2"], ["--batch-sizes", "predict only"]),
    (["--config", "x.yaml"], ["--config or --model, not both"]),
])
def test_a_bad_model_flag_is_one_error_line(keras_file, capsys, argv, needles):
    code, _, err = run_cli(capsys, "search", "--model", str(keras_file), *argv)
    assert_one_error_line(code, err, *needles)
    assert not Path("results").exists()


def test_model_flags_without_model_are_refused(write_config, capsys):
    path = write_config()
    code, _, err = run_cli(capsys, "search", "--config", str(path), "--batch-size", "8")
    assert_one_error_line(code, err, "--batch-size goes with --model", "build_data()")
    # a model-file config: where the value goes in it
    model = Path("m.keras")
    model.write_bytes(b"PK")
    path.write_text(f"workload: {{model: {str(model.resolve())!r}}}\n")
    code, _, err = run_cli(capsys, "search", "--config", str(path), "--batch-size", "8")
    assert_one_error_line(code, err, "--batch-size goes with --model",
                          f"set workload.batch_size in {path}")
    code, _, err = run_cli(capsys, "search")
    assert_one_error_line(code, err, "--model PATH", "--config FILE")


def test_train_needs_a_keras_file(saved_model, capsys):
    code, _, err = run_cli(capsys, "search", "--model", str(saved_model), "--mode", "train")
    assert_one_error_line(code, err, "--mode train", "compiled .keras")


# -- the generated config ------------------------------------------------------------------------

def test_the_generated_config_is_one_a_user_could_write(keras_file, tmp_path):
    cfg, text, where = modelfile.config_for(modelfile.ModelFlags(
        model=str(keras_file), batch_size=8, batch_sizes=[1, 8, 32],
        input_shapes=("tokens=1x16",)), cwd=tmp_path)
    assert cfg.study_name == "My-Model"                       # from the file's name
    assert where == Path("results/My-Model/tuned.config.yaml")      # beside the tuned file
    assert cfg.output == "results/My-Model/tuned.yaml"
    doc = yaml.safe_load(text)
    assert doc["workload"] == {"model": str(keras_file), "batch_size": 8,
                               "input_shapes": {"tokens": "1x16"}, "mode": "predict"}
    assert doc["space"] == {"batch_size": [1, 8, 32]}
    assert cfg.workload.model_format == "keras" and cfg.workload.generated
    assert cfg.workload.input_shapes == {"tokens": [1, 16]}
    assert cfg.space == {"batch_size": [1, 8, 32]}
    assert text.startswith("# generated by")


def test_a_saved_model_gets_its_signature_and_study_name(saved_model, tmp_path):
    cfg, text, _ = modelfile.config_for(modelfile.ModelFlags(model=str(saved_model)),
                                        cwd=tmp_path)
    assert cfg.study_name == "exported"
    assert cfg.workload.model_format == "saved_model"
    assert cfg.workload.signature == "serving_default" and cfg.workload.batch_size == 32
    assert yaml.safe_load(text)["workload"]["saved_model"] == str(saved_model)


def test_data_keeps_the_users_pipeline_with_an_absolute_path(keras_file, tmp_path):
    (tmp_path / "pipe.py").write_text("def build():\n    pass\n")
    cfg, _, _ = modelfile.config_for(modelfile.ModelFlags(model=str(keras_file),
                                                          data="pipe.py:build"), cwd=tmp_path)
    assert cfg.workload.data == f"{tmp_path / 'pipe.py'}:build"
    assert not cfg.workload.generated and cfg.workload.batch_size is None


def test_the_generated_config_resumes_the_same_study(keras_file, fake_worker, capsys):
    flags = ("--model", str(keras_file), "--batch-sizes", "16,64")
    code, out, err = run_cli(capsys, "search", *flags, "--n-trials", "1")
    assert code == 0, err
    where = Path("results/My-Model/tuned.config.yaml")
    assert f"config: {where} (resume with python -m tuner search --config {where})" in out
    first = [t for t in load_study("My-Model").trials if t.state.name == "COMPLETE"]
    n_first = len(first)      # the expert rule's trial may wait, enqueued, for the next run
    assert n_first == 1 and first[0].user_attrs["role"] == "baseline"
    # resumed from the file: the same study, one more trial, not refused as another workload
    code, out, err = run_cli(capsys, "search", "--config", str(where), "--n-trials", "1")
    assert code == 0, err
    trials = [t for t in load_study("My-Model").trials if t.state.name == "COMPLETE"]
    assert len(trials) == n_first + 1 and trials[0].params == first[0].params
    assert f"resuming with {n_first} trials" in err
    assert config.load(where).fingerprint() == modelfile.config_for(modelfile.ModelFlags(
        model=str(keras_file), batch_sizes=[16, 64]))[0].fingerprint()
    doc = yaml.safe_load(open("results/My-Model/tuned.yaml"))
    assert doc["workload"]["config"] == str(where.resolve())
    assert doc["study"]["n_trials"] == n_first + 1
    # the same flags again: the same file, left as it is
    text = where.read_text()
    assert modelfile.write(text, where).created is False and where.read_text() == text


def test_batch_sizes_are_reported_with_throughput_and_latency_per_batch(keras_file, fake_worker,
                                                                         capsys):
    path = Path("study.yaml")
    body = (f"workload: {{model: {str(keras_file)!r}, batch_size: 32}}\n" + FAST_MEASURE
            + "space: {intra_op_parallelism_threads: default, "
              "inter_op_parallelism_threads: default, tf_data: "
              "{private_threadpool_size: default, max_intra_op_parallelism: default}, "
              "env: {TF_ENABLE_ONEDNN_OPTS: default, TF_XLA_FLAGS: default}, allocator: default, "
              "instances: default, cpus: default, batch_size: [8, 128]}\n")
    path.write_text(body.replace("n_trials: 2", "n_trials: 4, sampler: tpe"))
    code, out, err = run_cli(capsys, "search", "--config", str(path))
    assert code == 0, err
    rows = yaml.safe_load(open("results/study/tuned.yaml"))["search"]["batch_sizes"]
    assert [r["batch_size"] for r in rows] == [8, 32, 128]
    # the fake's bigger batches gain throughput and take longer each (32's best trial is the
    # expert rule's, faster still)
    assert rows[0]["throughput"] < rows[2]["throughput"]
    latency = [r["batch_latency_ms"]["p50"] for r in rows]
    assert latency == sorted(latency) and latency[0] > 0
    assert "ms/batch (p50)" in err and "batch sizes (best trial each): 8: " in out
    assert "is the caller's: tuner.apply() cannot set it" in out


def test_two_models_tuned_into_one_folder_each_get_their_own_config(keras_file, saved_model,
                                                                      fake_worker, capsys):
    # the generated config is named after the output: out/a.yaml's is out/a.config.yaml
    for model, name in ((keras_file, "a"), (saved_model, "b")):
        code, out, err = run_cli(capsys, "search", "--model", str(model), "--output",
                                 f"out/{name}.yaml", "--n-trials", "1")
        assert code == 0, err
        assert f"config: out/{name}.config.yaml (written)" in err
    assert sorted(p.name for p in Path("out").iterdir() if p.suffix == ".yaml") == [
        "a.config.yaml", "a.yaml", "b.config.yaml", "b.yaml"]
    assert config.load("out/a.config.yaml").workload.model == str(keras_file.resolve())
    assert config.load("out/b.config.yaml").workload.model == str(saved_model.resolve())
    assert yaml.safe_load(open("out/b.yaml"))["workload"]["config"] == str(
        Path("out/b.config.yaml").resolve())


@pytest.mark.parametrize("output,expected", [
    ("out/m.yaml", "out/m.config.yaml"), ("out/m.yml", "out/m.config.yaml"),
    ("results/x/tuned.yaml", "results/x/tuned.config.yaml"), ("m", "m.config.yaml")])
def test_the_config_path_is_named_after_the_output(output, expected):
    assert modelfile.config_path_for(output) == Path(expected)


def test_an_old_layouts_config_yaml_is_still_resumed(keras_file, fake_worker, capsys):
    # a study started before the configs were named after the output: its config.yaml, with
    # the same contents, is used as it is (not a second copy beside it)
    flags = modelfile.ModelFlags(model=str(keras_file))
    doc, _ = modelfile.generated(flags)
    legacy = Path("results/My-Model/config.yaml")
    legacy.parent.mkdir(parents=True)
    legacy.write_text(modelfile.render(doc, legacy))
    code, out, err = run_cli(capsys, "search", "--model", str(keras_file), "--n-trials", "1")
    assert code == 0, err
    assert f"config: {legacy} (as before)" in err
    assert not Path("results/My-Model/tuned.config.yaml").exists()
    # another model's config.yaml there does not block a new one
    legacy.write_text("# someone else's\n")
    code, out, err = run_cli(capsys, "search", "--model", str(keras_file), "--n-trials", "1")
    assert code == 0, err
    assert "config: results/My-Model/tuned.config.yaml (written)" in err


def test_a_hand_edited_config_is_never_overwritten(keras_file, fake_worker, capsys):
    where = Path("results/My-Model/tuned.config.yaml")
    where.parent.mkdir(parents=True)
    where.write_text("# mine\n")
    code, _, err = run_cli(capsys, "search", "--model", str(keras_file))
    assert_one_error_line(code, err, str(where), "differs", f"--config {where}")
    assert where.read_text() == "# mine\n"


def test_a_failed_preflight_takes_the_new_config_back(keras_file, fake_worker, capsys,
                                                      monkeypatch):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "preflight-fail")
    code, _, err = run_cli(capsys, "search", "--model", str(keras_file))
    assert_one_error_line(code, err, "--model: workload preflight failed")
    assert not Path("results").exists()


# -- the config file's workload section ----------------------------------------------------------

def _load(tmp_path: Path, workload: str, extra: str = "") -> config.Config:
    path = tmp_path / "study.yaml"
    path.write_text(f"workload: {workload}\n{extra}")
    return config.load(path)


def test_a_config_names_a_model_relative_to_itself(keras_file, saved_model, tmp_path):
    cfg = _load(tmp_path, "{model: 'My Model.keras', batch_size: 8}")
    assert cfg.workload.model == str(keras_file) and cfg.workload.batch_size == 8
    assert cfg.workload.mode == "predict" and cfg.study_name == "study"
    cfg = _load(tmp_path, "{saved_model: exported, signature: serve, input_shapes: "
                          "{x: [1, 3], y: 2x5}}")
    assert cfg.workload.model == str(saved_model) and cfg.workload.signature == "serve"
    assert cfg.workload.input_shapes == {"x": [1, 3], "y": [2, 5]}
    assert cfg.workload.batch_size == 32


@pytest.mark.parametrize("workload,extra,needles", [
    ("{model: gone.keras}", "", ["workload.model", "gone.keras", "does not exist"]),
    ("{saved_model: nowhere}", "", ["workload.saved_model", "does not exist"]),
    ("{model: 'My Model.keras', saved_model: exported}", "", ["not both"]),
    ("{model: 'My Model.keras', signature: s}", "", ["workload.signature"]),
    ("{saved_model: exported, mode: train}", "", ["workload.mode", "compiled .keras"]),
    ("{model: 'My Model.keras', batch_size: 0}", "", ["workload.batch_size", ">= 1"]),
    ("{model: 'My Model.keras', input_shapes: {x: [1, -2]}}", "",
     ["workload.input_shapes.x", "sizes >= 1"]),
    ("{model: 'My Model.keras', data: 'pipe.py:build', batch_size: 8}", "",
     ["workload.batch_size", "with data:"]),
    ("{model: 'wl.py:build_model', data: 'wl.py:build_data', mode: predict}",
     "space: {batch_size: [1, 8]}\n", ["space.batch_size", "model file"]),
    ("{model: 'wl.py:build_model', data: 'wl.py:build_data', mode: predict, batch_size: 8}",
     "", ["workload.batch_size", "applies to a model file"]),
    ("{model: 'My Model.keras'}", "knobs: {prefetch: [1, 2]}\n", ["knobs", "model file"]),
    ("{model: 'My Model.keras'}", "space: {batch_size: [0]}\n", ["space.batch_size", "0"]),
])
def test_a_bad_model_workload_names_its_field(keras_file, saved_model, tmp_path, capsys,
                                              workload, extra, needles):
    (tmp_path / "pipe.py").write_text("def build():\n    pass\n")
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n"
                                    "    pass\n")
    path = tmp_path / "study.yaml"
    path.write_text(f"workload: {workload}\n{extra}")
    code, _, err = run_cli(capsys, "search", "--config", str(path))
    assert_one_error_line(code, err, str(path), *needles)


# -- the batch-size knob -------------------------------------------------------------------------

def test_a_searched_batch_size_measures_the_workloads_own_batch_as_its_baseline():
    machine = plain_machine()
    pipeline = space.Pipeline(batch_size=32)
    sp = space.build_space(machine, {"batch_size": [1, 8, 32, 128]}, pipeline=pipeline)
    assert sp.searched["batch_size"] == [1, 8, 32, 128]         # no null standing for 32
    assert sp.baseline()["batch_size"] == 32 and sp.expert(machine)["batch_size"] == 32
    sp = space.build_space(machine, {"batch_size": [1, 8]}, pipeline=pipeline)
    assert sp.searched["batch_size"] == [1, 8, 32]
    # not asked for: not searched, and the tuned file says nothing of it
    sp = space.build_space(machine, {}, pipeline=pipeline)
    assert sp.fixed["batch_size"] is None and sp.baseline()["batch_size"] is None
    with pytest.raises(ConfigError, match="space.batch_size: 1: the batch size is searched only"):
        space.build_space(machine, {"batch_size": [1, 8]}, pipeline=space.Pipeline())


def test_the_batch_size_is_the_callers_and_the_file_says_so():
    nested = {"intra_op_parallelism_threads": 0, "batch_size": 8}
    note = knobs.BATCH_SIZE.note(nested)
    assert "the caller's choice, which tuner.apply() cannot set" in note
    assert "max_batch_size 8" in note
    assert knobs.BATCH_SIZE.note({"batch_size": None}) is None
    assert knobs.BATCH_SIZE.batch({"batch_size": None}, 32) == 32
    assert knobs.BATCH_SIZE.batch({"batch_size": 4}, 32) == 4


# -- export --format tf-serving ------------------------------------------------------------------

def _tuned(tmp_path: Path, **settings) -> Path:
    doc = {"format_version": 1, "verdict": "tuned", **settings_doc(**settings),
           "machine": {"usable_cpus": 2, "cpu_model": "test CPU", "tf_version": "2.21.0"},
           **evidence()}
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_tf_serving_export_carries_both_thread_flags_and_the_environment(tmp_path, capsys):
    path = _tuned(tmp_path, intra_op_parallelism_threads=4, inter_op_parallelism_threads=2,
                  env={"TF_ENABLE_ONEDNN_OPTS": "0"}, batch_size=16,
                  tf_data={"private_threadpool_size": 2, "max_intra_op_parallelism": None})
    code, out, err = run_cli(capsys, "export", str(path), "--format", "tf-serving")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[-1] == ("exec tensorflow_model_server --tensorflow_intra_op_parallelism=4 "
                         "--tensorflow_inter_op_parallelism=2 \"$@\"")
    assert "export TF_ENABLE_ONEDNN_OPTS=0" in lines
    # the thread counts travel as the server's flags, not as variables it would not read
    assert not any("TF_NUM_INTRAOP_THREADS" in line for line in lines)
    comments = "\n".join(line for line in lines if line.startswith("# "))
    assert "tf.data settings and declared knobs" in comments
    assert "max_batch_size { value: 16 }" in comments and "--enable_batching=true" in comments
    assert "--platform_config_file" in comments


def test_tf_serving_export_runs_the_server_with_those_flags(tmp_path, capsys):
    """The wrapper, run by a shell, starts the server with its flags, the caller's arguments
    and the variables, every value literal (a fake server prints what it got)."""
    path = _tuned(tmp_path, intra_op_parallelism_threads=3, inter_op_parallelism_threads=0,
                  env={"KMP_AFFINITY": "granularity=fine,compact,1,0", "MY_FLAGS": "$(touch M)"})
    code, out, err = run_cli(capsys, "export", str(path), "--format", "tf-serving",
                             "--allow-env", "MY_FLAGS")
    assert code == 0, err
    script = tmp_path / "serve.sh"
    script.write_text(out)
    server = tmp_path / "bin" / "tensorflow_model_server"
    server.parent.mkdir()
    server.write_text('#!/bin/sh\nprintf "%s\\n" "$@" "$KMP_AFFINITY" "$MY_FLAGS"\n')
    server.chmod(server.stat().st_mode | stat.S_IEXEC)
    proc = subprocess.run(["sh", str(script), "--model_name=m", "--port=8500"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{server.parent}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "--tensorflow_intra_op_parallelism=3", "--tensorflow_inter_op_parallelism=0",
        "--model_name=m", "--port=8500", "granularity=fine,compact,1,0", "$(touch M)"]
    assert not (tmp_path / "M").exists()


def test_tf_serving_export_says_several_instances_need_several_servers(tmp_path):
    path = _tuned(tmp_path, cpus=[0, 1, 2, 3], instances={"count": 2, "cpus": [[0, 1], [2, 3]]})
    text = launch.export(str(path), "tf-serving")
    assert "2 instances measured: one server cannot carry them; start 2 servers" in text
    assert "`taskset -c 0-1`, `taskset -c 2-3`" in text
    assert "CPU set 0-3: no variable pins a process; use `taskset -c 0-3`" in text


# -- size --model ------------------------------------------------------------------------------

def test_size_needs_a_config_or_a_model(capsys):
    code, _, err = run_cli(capsys, "size", "--cpus", "1")
    assert_one_error_line(code, err, "size: give --model PATH", "--config FILE")


def test_size_runs_on_a_model_file_and_writes_its_config(keras_file, fake_worker, capsys):
    code, out, err = run_cli(capsys, "size", "--model", str(keras_file), "--cpus", "1",
                             "--n-trials", "1")
    assert code == 0, err
    where = Path("results/My-Model/tuned.config.yaml")
    assert f"config: {where} (written)" in err
    sizes = yaml.safe_load(open("results/My-Model/sizes.yaml"))
    assert [row["cpus"] for row in sizes["sizes"]] == [1]
    assert config.load(where).workload.model == str(keras_file.resolve())
