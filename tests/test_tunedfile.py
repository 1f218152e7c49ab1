"""The tuned file: format versions and the strict check of its settings section."""

from __future__ import annotations

import pytest
import yaml
from helpers import FIXTURES, run_cli, settings_doc

from tuner.errors import ConfigError
from tuner.tuned import store as tuned
from tuner.tuned.reader import check_settings


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("format_version: 99\nsettings: {}\n")
    with pytest.raises(Exception, match="format_version 99 is not supported"):
        tuned.load(path)



def test_check_settings_accepts_options_and_knobs():
    check_settings(settings_doc()["settings"], "t.yaml")
    check_settings(settings_doc(tf_data={"private_threadpool_size": 2,
                                       "autotune": {"enabled": False, "cpu_budget": 2,
                                                    "autotune_algorithm": "HILL_CLIMB"},
                                       "optimization": {"map_parallelization": True}},
                              knobs={"map_parallelism": "autotune", "prefetch": 2,
                                     "ratio": 0.5, "name": None})["settings"], "t.yaml")


# Real files written by the first tuner with validation (commit df48d06, format_version 1, with
# its own fake worker): settings without allocator, cpus, instances or knobs; objective a plain
# string; a defaults verdict holding the made-up speedup 1.0, [1.0, 1.0], p 1.0 of that time.
OLD = {"tuned": FIXTURES / "old-df48d06-tuned.yaml",
       "defaults": FIXTURES / "old-df48d06-defaults.yaml"}


@pytest.mark.parametrize("verdict", ["tuned", "defaults"])
def test_old_files_are_read_by_every_reader(verdict, capsys):
    from tuner.production import launch
    from tuner.results import model as results
    from tuner.tuned import reader as tunedfile

    path = OLD[verdict]
    raw = yaml.safe_load(path.read_text())
    assert "written by tuner 0.1.0" in path.read_text()
    assert not {"allocator", "cpus", "instances", "knobs"} & set(raw["settings"])
    assert raw["objective"] == "throughput" and raw["verdict"] == verdict
    read = tunedfile.read(path)
    assert read.verdict == verdict
    check_settings(read.settings, str(path))
    shown = results.from_tuned_file(path)
    env = launch.export(str(path), "shell")
    code, out, err = run_cli(capsys, "show", str(path))
    assert (code, err) == (0, "")
    if verdict == "tuned":
        assert shown.speedup == raw["result"]["speedup"] > 1.1
        assert "export TF_NUM_INTRAOP_THREADS=2" in env
        assert f"{raw['result']['speedup']:.3f}x" in out
    else:
        # the old made-up numbers are not shown as a measurement: the candidate's are
        assert raw["result"]["speedup"] == 1.0 and raw["result"]["p_value"] == 1.0
        assert shown.speedup is None and shown.p_value is None
        assert "defaults kept" in out and "1.000x" not in out
        assert f"trial {raw['result']['rejected']['trial']}: " in out
        assert "TF_NUM_INTRAOP_THREADS" not in env


@pytest.mark.parametrize("settings,message", [
    ({"tf_data": {"autotune": {"enabled": "yes"}}},
     "settings.tf_data.autotune.enabled: expected true, false or null, got 'yes'"),
    ({"tf_data": {"autotune": {"cpu_budget": 0}}},
     "settings.tf_data.autotune.cpu_budget: expected an integer >= 1 or null, got 0"),
    ({"tf_data": {"autotune": {"autotune_algorithm": "FAST"}}},
     "settings.tf_data.autotune.autotune_algorithm: expected one of DEFAULT"),
    ({"tf_data": {"autotune": {"budget": 1}}},
     "settings.tf_data.autotune.budget: unknown (did you mean"),
    ({"tf_data": {"autotune": {"cpu_budgte": 1}}},
     "settings.tf_data.autotune.cpu_budgte: unknown (did you mean 'cpu_budget'?); allowed: "),
    ({"tf_data": {"autotune": True}}, "settings.tf_data.autotune: expected a mapping, got True"),
    ({"tf_data": {"optimisation": {}}},
     ("settings.tf_data.optimisation: unknown (did you mean 'optimization'?); allowed: "
      "private_threadpool_size, "
     "max_intra_op_parallelism, autotune, optimization")),
    ({"knobs": [1]}, "settings.knobs: expected a mapping"),
    ({"knobs": {"a b": 1}}, "settings.knobs: 'a b' is not a valid knob name"),
    ({"knobs": {"prefetch": [1]}}, "settings.knobs.prefetch: expected a number, a string"),
])
def test_check_settings_names_the_bad_field(settings, message):
    with pytest.raises(ConfigError) as caught:
        check_settings(settings_doc(**settings)["settings"], "t.yaml")
    assert message in str(caught.value)
