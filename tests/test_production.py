"""Using a tuned file: tuner.apply() in fresh processes, the launcher, export, and the safety
checks. TensorFlow runs for real in the child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from helpers import evidence, settings_doc

import tuner
from tuner import cli
from tuner.base import host
from tuner.production.apply import Applied, check_machine
from tuner.tuned.reader import read

here = host.detect()
MACHINE = dict(here.as_dict(), tf_version=host.installed_tf_version())


def make_tuned(tmp_path, *, intra=3, inter=1, pool=2, max_intra=None, env=None, name="tuned.yaml",
               **machine_changes):
    doc = {
        "format_version": 1, "verdict": "tuned",
        "settings": {"intra_op_parallelism_threads": intra, "inter_op_parallelism_threads": inter,
                     "tf_data": {"private_threadpool_size": pool,
                                 "max_intra_op_parallelism": max_intra},
                     "env": {"TF_ENABLE_ONEDNN_OPTS": "0"} if env is None else env},
        "machine": dict(MACHINE, **machine_changes),
        **evidence(),
        "study": {"name": "t", "storage": "sqlite:///results/t.db", "n_trials": 3},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def py(code: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                             "TF_ENABLE_ONEDNN_OPTS", "TUNER_TUNED_FILE")}
    full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def _default_sigint() -> None:
    """A shell that starts its background jobs with SIGINT ignored passes that on, and an
    ignored SIGINT stays ignored across exec: give the child the default, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.tf
def test_apply_sets_threads_env_and_dataset_options_in_a_fresh_process(tmp_path):
    path = make_tuned(tmp_path, intra=3, inter=3, pool=2, max_intra=1)
    out = last_json(py(f"""
        import json, os, sys, warnings
        warnings.simplefilter("error")          # no warning expected on a matching machine
        import tuner
        cfg = tuner.apply({str(path)!r})
        import tensorflow as tf
        ds = tf.data.Dataset.range(4).with_options(cfg.dataset_options())
        _ = list(ds)                             # runs ops: the runtime starts with these pools
        a = tf.random.normal((256, 256))
        _ = (a @ a).numpy()
        names = [open(f"/proc/self/task/{{t}}/comm").read().strip()
                 for t in os.listdir("/proc/self/task")]
        print(json.dumps({{
            "inter_pool_threads": names.count("tf_Compute"),
            "intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "env_intra": os.environ.get("TF_NUM_INTRAOP_THREADS"),
            "pool": ds.options().threading.private_threadpool_size,
            "max_intra": ds.options().threading.max_intra_op_parallelism,
            "info": cfg.info()}}))
        """))
    assert out["intra"] == 3 and out["inter"] == 3
    assert out["inter_pool_threads"] == 3    # the runtime's inter-op pool really has 3 threads
    assert out["onednn"] == "0" and out["env_intra"] == "3"
    assert out["pool"] == 2 and out["max_intra"] == 1
    info = out["info"]
    assert info["threading"] == {"intra_op_parallelism_threads": 3,
                                 "inter_op_parallelism_threads": 3}
    assert info["env_set"]["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert info["late"] == [] and info["machine_differences"] == []


@pytest.mark.tf
def test_apply_after_the_runtime_started_raises_a_tuner_error(tmp_path):
    path = make_tuned(tmp_path, intra=3, inter=1, env={})
    proc = py(f"""
        import tensorflow as tf
        tf.constant(1.0) + 1.0                   # initialises the runtime with the defaults
        import tuner
        try:
            tuner.apply({str(path)!r})
        except tuner.TunerError as exc:
            print(type(exc).__name__, "|", exc)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("RuntimeInitializedError | ")
    assert "already initialised with intra_op_parallelism_threads=default" in proc.stdout
    assert "python -m tuner run" in proc.stdout


@pytest.mark.tf
def test_apply_after_the_runtime_started_with_matching_values_does_nothing(tmp_path):
    path = make_tuned(tmp_path, intra=0, inter=0, pool=None, env={})
    out = last_json(py(f"""
        import json, warnings
        warnings.simplefilter("error")
        import tensorflow as tf
        tf.constant(1.0) + 1.0
        import tuner
        print(json.dumps(tuner.apply({str(path)!r}).info()))
        """))
    assert out["env_set"] == {} and out["late"] == []


@pytest.mark.tf
def test_settings_that_come_too_late_are_named(tmp_path):
    path = make_tuned(tmp_path, intra=2, inter=2, env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    proc = py(f"""
        import warnings
        import tensorflow as tf                  # imported, not yet initialised
        import tuner
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = tuner.apply({str(path)!r})
        print([(w.category.__name__, str(w.message)) for w in caught])
        print(tf.config.threading.get_intra_op_parallelism_threads())
        """)
    assert proc.returncode == 0, proc.stderr
    assert "LateSettingWarning" in proc.stdout and "env TF_ENABLE_ONEDNN_OPTS=0" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "2"  # threads still take effect


@pytest.mark.tf
def test_explicit_values_win_unless_override(tmp_path):
    path = make_tuned(tmp_path, intra=3, inter=1, env={})
    code = f"""
        import json, warnings
        warnings.simplefilter("ignore")
        import tuner
        cfg = tuner.apply({str(path)!r}, override=OVERRIDE)
        import tensorflow as tf
        print(json.dumps([cfg.info()["env_kept"], cfg.info()["threading_kept"],
                          tf.config.threading.get_intra_op_parallelism_threads()]))
        """
    kept, threads_kept, intra = last_json(py(code.replace("OVERRIDE", "False"),
                                             env={"TF_NUM_INTRAOP_THREADS": "4"}))
    assert kept == {"TF_NUM_INTRAOP_THREADS": "4"}
    assert threads_kept == {"intra_op_parallelism_threads": 4} and intra == 0
    kept, threads_kept, intra = last_json(py(code.replace("OVERRIDE", "True"),
                                             env={"TF_NUM_INTRAOP_THREADS": "4"}))
    assert kept == {} and intra == 3


def test_apply_without_a_path_needs_the_launcher(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNER_TUNED_FILE", raising=False)
    with pytest.raises(tuner.ConfigError, match="TUNER_TUNED_FILE"):
        tuner.apply()


@pytest.mark.tf
def test_launcher_sets_the_environment_and_passes_the_exit_code(tmp_path):
    path = make_tuned(tmp_path, intra=3, inter=1, pool=2)
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent("""
        import json, os, sys
        import tuner
        cfg = tuner.apply()                       # finds the file through TUNER_TUNED_FILE
        import tensorflow as tf
        print(json.dumps({"intra_env": os.environ["TF_NUM_INTRAOP_THREADS"],
                          "inter_env": os.environ["TF_NUM_INTEROP_THREADS"],
                          "onednn": os.environ["TF_ENABLE_ONEDNN_OPTS"],
                          "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                          "pool": cfg.dataset_options().threading.private_threadpool_size,
                          "argv": sys.argv[1:]}))
        sys.exit(7)
        """))
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           sys.executable, str(job), "--epochs", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"intra_env": "3", "inter_env": "1", "onednn": "0", "intra": 3, "pool": 2,
                   "argv": ["--epochs", "3"]}
    assert "tf.data settings (private_threadpool_size=2)" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_launcher_passes_signals_through(tmp_path, sig):
    path = make_tuned(tmp_path, env={})
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--quiet",
                             "--", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 20
    while time.time() < deadline:  # wait until the launcher has become `sleep`
        try:
            if open(f"/proc/{proc.pid}/comm").read().strip() == "sleep":
                break
        except OSError:
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == -sig


def test_launcher_exit_code_and_missing_command(tmp_path, capsys):
    path = make_tuned(tmp_path, env={})
    assert subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           "sh", "-c", "exit 42"]).returncode == 42
    # as shells do: 127 for a command not found, 126 for one found but not executable
    assert cli.main(["run", "--tuned", str(path), "--", "no-such-command-xyz"]) == 127
    assert capsys.readouterr().err == "error: run: command not found: 'no-such-command-xyz'\n"
    assert cli.main(["run", "--tuned", str(path), "--", str(tmp_path / "missing.sh")]) == 127
    assert "command not found" in capsys.readouterr().err
    plain = tmp_path / "plain.sh"
    plain.write_text("echo hi\n")
    plain.chmod(0o644)
    assert cli.main(["run", "--tuned", str(path), "--", str(plain)]) == 126
    assert "permission denied (not executable)" in capsys.readouterr().err
    assert cli.main(["run", "--tuned", str(path), "--", str(tmp_path)]) == 126
    assert "is a directory" in capsys.readouterr().err
    # only in PATH, and not executable there: 126 as well
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "tool-xyz").write_text("echo hi\n")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           "tool-xyz"], env=env, capture_output=True, text=True)
    assert proc.returncode == 126, proc.stderr
    # executable, but not a program the kernel can start (no #! line): exec fails, 126
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01not a program\n")
    garbage.chmod(0o755)
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           str(garbage)], capture_output=True, text=True)
    assert proc.returncode == 126, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: run: ")
    assert "cannot execute: Exec format error" in proc.stderr
    assert cli.main(["run", "--tuned", str(path)]) == 2
    assert "no command given" in capsys.readouterr().err


def test_machine_mismatch_warns_and_strict_refuses(tmp_path, capsys):
    path = make_tuned(tmp_path, env={}, usable_cpus=here.usable_cpus * 8, cpu_model="Other CPU",
                      tf_version="1.15.0")
    with pytest.warns(tuner.MachineMismatchWarning) as caught:
        diffs = check_machine(read(path).doc, str(path), strict=False)
    text = str(caught[0].message)
    assert f"usable CPUs: tuned for {here.usable_cpus * 8}, this process can use " \
           f"{here.usable_cpus}" in text and "slower" in text
    assert "CPU model" in text and "TensorFlow: tuned with 1.15.0" in text
    assert len(diffs) == 3
    with pytest.raises(tuner.MachineMismatchError):
        check_machine(read(path).doc, str(path), strict=True)
    code = cli.main(["run", "--tuned", str(path), "--strict", "--", "true"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "usable CPUs" in err
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           "true"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "tuner: warning:" in proc.stderr and "usable CPUs" in proc.stderr


@pytest.mark.parametrize("nulled", ["usable_cpus", "cpu_model", "tf_version", "all", "block"])
def test_strict_refuses_a_machine_block_it_cannot_compare(tmp_path, capsys, nulled):
    path = make_tuned(tmp_path, env={})
    doc = yaml.safe_load(path.read_text())
    if nulled == "block":
        del doc["machine"]
    else:
        for key in (("usable_cpus", "cpu_model", "tf_version") if nulled == "all" else (nulled,)):
            doc["machine"][key] = None
    path.write_text(yaml.safe_dump(doc))
    flags = ["--allow-unvalidated"] if nulled == "block" else []  # a verdict without its machine
    code = cli.main(["run", "--tuned", str(path), "--strict", *flags, "--", "true"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not record the machine's" in err
    if nulled == "block":   # and without --allow-unvalidated, no machine means no evidence
        assert cli.main(["run", "--tuned", str(path), "--", "true"]) == 2
        assert "does not say which machine" in capsys.readouterr().err


@pytest.mark.tf
def test_apply_strict_refuses_a_file_from_another_machine(tmp_path):
    path = make_tuned(tmp_path, env={}, usable_cpus=here.usable_cpus + 14)
    proc = py(f"""
        import tuner
        try:
            tuner.apply({str(path)!r}, strict=True)
        except tuner.MachineMismatchError as exc:
            print("refused:", exc)
        """)
    assert "refused:" in proc.stdout and "usable CPUs" in proc.stdout, proc.stderr


EXPECTED = {
    "shell": "# tuned settings from {p} (verdict: tuned)\n"
             "# tf.data settings (private_threadpool_size=2) cannot be set from the environment: "
             "call cfg = tuner.apply() in the job and use ds.with_options(cfg.dataset_options())\n"
             "export TF_ENABLE_ONEDNN_OPTS=0\nexport TF_NUM_INTRAOP_THREADS=3\n"
             "export TF_NUM_INTEROP_THREADS=1\n",
    "dotenv": "# tuned settings from {p} (verdict: tuned)\n"
              "# tf.data settings (private_threadpool_size=2) cannot be set from the environment: "
              "call cfg = tuner.apply() in the job and use ds.with_options(cfg.dataset_options())\n"
              "TF_ENABLE_ONEDNN_OPTS=0\nTF_NUM_INTRAOP_THREADS=3\nTF_NUM_INTEROP_THREADS=1\n",
    "docker": "-e TF_ENABLE_ONEDNN_OPTS=0 -e TF_NUM_INTRAOP_THREADS=3 "
              "-e TF_NUM_INTEROP_THREADS=1\n",
    "k8s": "# tuned settings from {p} (verdict: tuned)\n"
           "# tf.data settings (private_threadpool_size=2) cannot be set from the environment: "
           "call cfg = tuner.apply() in the job and use ds.with_options(cfg.dataset_options())\n"
           "env:\n  - name: TF_ENABLE_ONEDNN_OPTS\n    value: \"0\"\n"
           "  - name: TF_NUM_INTRAOP_THREADS\n    value: \"3\"\n"
           "  - name: TF_NUM_INTEROP_THREADS\n    value: \"1\"\n",
}


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_export_formats(tmp_path, capsys, fmt):
    path = make_tuned(tmp_path)
    assert cli.main(["export", str(path), "--format", fmt]) == 0
    out, err = capsys.readouterr()
    assert out == EXPECTED[fmt].format(p=path)
    if fmt == "docker":
        assert "tf.data settings" in err
    if fmt == "k8s":
        env = yaml.safe_load(out)["env"]
        assert {e["name"]: e["value"] for e in env}["TF_NUM_INTRAOP_THREADS"] == "3"
    if fmt == "shell":
        script = out + 'echo "$TF_NUM_INTRAOP_THREADS/$TF_ENABLE_ONEDNN_OPTS"\n'
        assert subprocess.run(["bash", "-c", script], capture_output=True,
                              text=True).stdout.strip() == "3/0"


def test_export_of_a_defaults_verdict_says_there_is_nothing_to_set(tmp_path, capsys):
    path = make_tuned(tmp_path, intra=0, inter=0, pool=None, env={})
    assert cli.main(["export", str(path), "--format", "k8s"]) == 0
    out = capsys.readouterr().out
    assert "nothing to set" in out and yaml.safe_load(out) == {"env": []}


def test_export_unknown_format(tmp_path, capsys):
    assert cli.main(["export", str(make_tuned(tmp_path)), "--format", "ini"]) == 2
    err = capsys.readouterr().err
    assert "'ini'" in err and "shell, dotenv, docker, k8s" in err


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.update(format_version=7), "format_version 7 is not supported"),
    (lambda d: d.pop("settings"), "settings: missing"),
    (lambda d: d["settings"].update(intra_op_parallelism_threads="two"),
     "settings.intra_op_parallelism_threads: expected an integer >= 0, got 'two'"),
    (lambda d: d["settings"].pop("inter_op_parallelism_threads"),
     "settings.inter_op_parallelism_threads: missing"),
    (lambda d: d["settings"]["tf_data"].update(private_threadpool_size=0),
     "settings.tf_data.private_threadpool_size: expected an integer >= 1 or null, got 0"),
    (lambda d: d["settings"]["tf_data"].update(cycle=2), "settings.tf_data.cycle: unknown"),
    (lambda d: d["settings"].update(env={"TF_ENABLE_ONEDNN_OPTS": 0}),
     "settings.env.TF_ENABLE_ONEDNN_OPTS: expected a string, got 0"),
])
def test_invalid_tuned_files_name_the_field(tmp_path, capsys, mutate, needle):
    path = make_tuned(tmp_path)
    doc = yaml.safe_load(path.read_text())
    mutate(doc)
    path.write_text(yaml.safe_dump(doc))
    for argv in (["export", str(path)], ["run", "--tuned", str(path), "--", "true"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err, err
    with pytest.raises(tuner.ConfigError, match="tuned.yaml"):
        tuner.apply(path)


def test_missing_tuned_file(capsys):
    assert cli.main(["export", "nope.yaml"]) == 2
    assert "nope.yaml: tuned file not found" in capsys.readouterr().err


# -- allocator, CPU set and instances --------------------------------------------------------------

TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
PROBE = textwrap.dedent("""
    import json, os, sys
    maps = open("/proc/self/maps").read()
    out = {"index": os.environ.get("TUNER_INSTANCE"), "count": os.environ.get("TUNER_INSTANCES"),
           "cpus": sorted(os.sched_getaffinity(0)),
           "tcmalloc": "libtcmalloc" in maps, "jemalloc": "libjemalloc" in maps}
    open(os.path.join(sys.argv[1], "out-%s-%d.json" % (out["index"], os.getpid())), "w").write(
        json.dumps(out))
    sys.exit(int(sys.argv[2]) if out["index"] == "1" else 0)
""")


def placed_tuned(tmp_path, **settings):
    path = make_tuned(tmp_path, env={})
    doc = yaml.safe_load(path.read_text())
    doc["settings"].update(settings)
    path.write_text(yaml.safe_dump(doc))
    return path


def run_probe(tmp_path, path, *extra, code=0, prefix=()):
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    proc = subprocess.run([*prefix, sys.executable, "-m", "tuner", "run", "--tuned", str(path),
                           *extra, "--", sys.executable, str(tmp_path / "probe.py"), str(out),
                           str(code)],
                          capture_output=True, text=True, timeout=60)
    return proc, [json.loads(p.read_text()) for p in sorted(out.glob("out-*.json"))]


@pytest.mark.parametrize("allocator", ["tcmalloc", "jemalloc"])
def test_launcher_preloads_the_allocator(tmp_path, allocator):
    if allocator not in host.detect().allocators:
        pytest.skip(f"{allocator} is not installed ({tuner.base.host.INSTALL_HINT[allocator]})")
    proc, (out,) = run_probe(tmp_path, placed_tuned(tmp_path, allocator=allocator))
    assert proc.returncode == 0, proc.stderr
    assert out[allocator] is True
    assert out["tcmalloc" if allocator == "jemalloc" else "jemalloc"] is False


def test_launcher_without_the_allocator_installed_warns_and_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tuner.base.host, "_LIB_DIRS", ())  # nothing installed, as seen in-process
    from tuner.production import launch

    doc = read(placed_tuned(tmp_path, allocator="jemalloc")).doc
    assert any("jemalloc, is not installed here" in n for n in launch._notes(doc, "t.yaml"))
    env, _ = launch.launch_env(doc, "t.yaml", base={})
    assert "LD_PRELOAD" not in env


@TWO_CPUS
def test_launcher_pins_to_the_cpu_set(tmp_path):
    proc, (out,) = run_probe(tmp_path, placed_tuned(tmp_path, cpus=[1]))
    assert proc.returncode == 0, proc.stderr
    assert out["cpus"] == [1]


@TWO_CPUS
def test_a_cpu_set_that_is_not_available_falls_back_to_unpinned(tmp_path):
    # CPU 1 exists, but the launcher (under taskset) may use CPU 0 only
    path = placed_tuned(tmp_path, cpus=[1])
    proc, (out,) = run_probe(tmp_path, path, prefix=("taskset", "-c", "0"))
    assert proc.returncode == 0, proc.stderr
    assert "not available to this process" in proc.stderr and "running unpinned" in proc.stderr
    assert out["cpus"] == [0]


@pytest.mark.parametrize("placement", [
    {"cpus": [4096]}, {"instances": {"count": 2, "cpus": [[0], [4097]]}},
    {"instances": {"count": 8, "cpus": [[1000 + i] for i in range(8)]}}])
def test_cpus_the_machine_lacks_are_refused_by_run_and_apply(tmp_path, placement):
    path = placed_tuned(tmp_path, **placement)
    proc, outs = run_probe(tmp_path, path)
    assert proc.returncode == 2 and outs == [], proc.stderr
    assert proc.stderr.count("\n") == 1 and "do not exist on this machine" in proc.stderr
    with pytest.raises(tuner.ConfigError, match="do not exist on this machine"):
        tuner.apply(str(path))


@TWO_CPUS
def test_more_instances_than_usable_cpus_are_refused(tmp_path):
    # CPUs 0 and 1 exist, but the launcher (under taskset) may use one CPU
    path = placed_tuned(tmp_path, instances={"count": 2, "cpus": [[0], [1]]})
    proc, outs = run_probe(tmp_path, path, prefix=("taskset", "-c", "0"))
    assert proc.returncode == 2 and outs == [], proc.stderr
    assert "2 instances, and this process may use 1 CPU(s)" in proc.stderr


@TWO_CPUS
def test_every_instance_the_launcher_starts_may_apply_the_file_itself(tmp_path):
    # each instance runs pinned to its own CPU and calls tuner.apply() as a job does: the
    # instance count was checked by the launcher against the job's CPUs, not again against one
    # instance's share (remeasure.py and repro.py run tuned files this way)
    path = placed_tuned(tmp_path, instances={"count": 2, "cpus": [[0], [1]]})
    job = tmp_path / "job.py"
    job.write_text("import json, os, sys, tuner\n"
                   "cfg = tuner.apply(sys.argv[1])\n"
                   "open(os.path.join(sys.argv[2], 'out-' + os.environ['TUNER_INSTANCE'] + "
                   "'.json'), 'w').write(json.dumps(sorted(os.sched_getaffinity(0))))\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "tuner", "run", "--tuned", str(path), "--",
                           sys.executable, str(job), str(path), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(p.read_text()) for p in out.glob("out-*.json")) == [[0], [1]]


@TWO_CPUS
def test_launcher_starts_every_instance_pinned_disjointly(tmp_path):
    path = placed_tuned(tmp_path, instances={"count": 2, "cpus": [[0], [1]]})
    proc, outs = run_probe(tmp_path, path, code=5)
    assert proc.returncode == 5  # instance 1's exit code comes back
    assert sorted((o["index"], o["count"], tuple(o["cpus"])) for o in outs) == [
        ("0", "2", (0,)), ("1", "2", (1,))]
    assert "starting 2 instances on CPUs 0 | 1" in proc.stderr
    # one given instance
    for p in (tmp_path / "out").glob("*"):
        p.unlink()
    proc, outs = run_probe(tmp_path, path, "--instance", "0")
    assert proc.returncode == 0, proc.stderr
    assert [(o["index"], o["cpus"]) for o in outs] == [("0", [0])]


@TWO_CPUS
@pytest.mark.tf  # tuner.apply() imports TensorFlow in both children
def test_apply_pins_the_instance_the_launcher_names(tmp_path):
    path = placed_tuned(tmp_path, instances={"count": 2, "cpus": [[0], [1]]})
    out = last_json(py(f"""
        import json, os, warnings, tuner
        cfg = tuner.apply({str(path)!r})
        print(json.dumps(cfg.info()))
    """, env={"TUNER_INSTANCE": "1"}))
    assert out["instance"] == 1 and out["cpus"] == [1]
    proc = py(f"""
        import json, os, warnings, tuner
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cfg = tuner.apply({str(path)!r})
        print(json.dumps({{"cpus": sorted(os.sched_getaffinity(0)),
                          "warnings": [str(x.message) for x in w]}}))
    """)
    out = last_json(proc)
    assert out["cpus"] == sorted(os.sched_getaffinity(0))  # no instance index: left unpinned
    assert any("start them with `python -m tuner run" in m for m in out["warnings"])


def test_export_carries_the_allocator_and_notes_cpu_sets(tmp_path, capsys):
    path = placed_tuned(tmp_path, allocator="tcmalloc", cpus=[0, 1],
                        instances={"count": 1, "cpus": None})
    assert cli.main(["export", str(path)]) == 0
    out = capsys.readouterr().out
    if "tcmalloc" in host.detect().allocators:
        assert "export LD_PRELOAD=" in out and "libtcmalloc" in out
    else:
        assert "not installed here" in out
    assert "taskset -c 0-1" in out and "--cpuset-cpus=0-1" in out


@pytest.mark.parametrize("change,needle", [
    ({"allocator": "mimalloc"}, "settings.allocator: 'mimalloc' is not allowed"),
    ({"cpus": "0-3"}, "settings.cpus: expected a list of CPU numbers or null, got '0-3'"),
    ({"instances": {"count": 2, "cpus": [[0]]}}, "settings.instances.cpus: expected 2 lists"),
    ({"instances": {"count": 0}}, "settings.instances: expected {count: N >= 1"),
])
def test_invalid_placement_settings_name_the_field(tmp_path, capsys, change, needle):
    path = placed_tuned(tmp_path, **change)
    assert cli.main(["run", "--tuned", str(path), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_instance_flag_needs_a_multi_instance_file(tmp_path, capsys):
    assert cli.main(["run", "--tuned", str(make_tuned(tmp_path)), "--instance", "1", "--",
                     "true"]) == 2
    assert "runs a single instance" in capsys.readouterr().err


def test_applied_knobs_without_autotune_need_no_tensorflow():
    applied = Applied(path="t.yaml", verdict="tuned",
                      settings=settings_doc(knobs={"prefetch": 2, "cycle_length": 4})["settings"])
    assert applied.knobs == {"prefetch": 2, "cycle_length": 4}
    assert applied.info()["knobs"] == {"prefetch": 2, "cycle_length": 4}
    assert Applied(path="t", verdict="tuned", settings=settings_doc()["settings"]).knobs == {}


def test_export_docker_of_a_defaults_file_prints_nothing_and_says_why(capsys):
    from helpers import FIXTURES

    path = str(FIXTURES / "quickstart-defaults.yaml")
    code = cli.main(["export", path, "--format", "docker"])
    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    assert "no environment variable to set (verdict defaults)" in err
