"""The tuned file: format versions and the strict check of its settings section."""

from __future__ import annotations

import pytest
from helpers import (
    settings_doc,
)

from tuner import (
    tuned,
)
from tuner.errors import ConfigError
from tuner.tunedfile import check_settings


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("format_version: 99\nsettings: {}\n")
    with pytest.raises(Exception, match="format_version 99 is not supported"):
        tuned.load(path)



def test_check_settings_accepts_options_and_knobs_and_old_files():
    check_settings(settings_doc()["settings"], "t.yaml")
    check_settings(settings_doc(tf_data={"private_threadpool_size": 2,
                                       "autotune": {"enabled": False, "cpu_budget": 2,
                                                    "autotune_algorithm": "HILL_CLIMB"},
                                       "optimization": {"map_parallelization": True}},
                              knobs={"map_parallelism": "autotune", "prefetch": 2,
                                     "ratio": 0.5, "name": None})["settings"], "t.yaml")


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
