"""One configuration as a whole: flat names <-> the tuned file's layout, its short label, and the
tf.data options it builds."""

from __future__ import annotations

from types import SimpleNamespace

from tuner.knobs import settings, space


def test_settings_nest_and_flatten_round_trip():
    flat = space.default_settings()
    flat.update({"intra_op_parallelism_threads": 3, "tf_data.private_threadpool_size": 2,
                 "env.TF_ENABLE_ONEDNN_OPTS": "0"})
    nested = settings.nest(flat)
    assert nested == {"intra_op_parallelism_threads": 3, "inter_op_parallelism_threads": 0,
                      "tf_data": {"private_threadpool_size": 2, "max_intra_op_parallelism": None},
                      "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "allocator": "system",
                      "cpus": None, "instances": {"count": 1, "cpus": None}}
    assert settings.flatten(nested) == flat


def test_tuned_file_layout_round_trips():
    flat = {**space.default_settings(), "tf_data.private_threadpool_size": 2,
            "tf_data.autotune.enabled": False, "tf_data.autotune.autotune_algorithm": "HILL_CLIMB",
            "tf_data.optimization.inject_prefetch": False,
            "knobs.map_parallelism": "autotune", "knobs.prefetch": 2}
    nested = settings.nest(flat)
    assert nested["tf_data"] == {"private_threadpool_size": 2, "max_intra_op_parallelism": None,
                                 "autotune": {"enabled": False, "autotune_algorithm": "HILL_CLIMB"},
                                 "optimization": {"inject_prefetch": False}}
    assert nested["knobs"] == {"map_parallelism": "autotune", "prefetch": 2}
    assert settings.flatten(nested) == flat
    # files without the new parts read as before
    plain = settings.nest(space.default_settings())
    assert "knobs" not in plain and set(plain["tf_data"]) == {"private_threadpool_size",
                                                              "max_intra_op_parallelism"}
    assert "map_parallelism=autotune prefetch=2" in settings.short(flat)
    assert "data.autotune=false" in settings.short(flat)


def test_tf_data_options_set_exactly_the_knobs_given():
    class Holder:
        def __init__(self, *names):
            for name in names:
                setattr(self, name, None)

    def options():
        return SimpleNamespace(threading=Holder("private_threadpool_size",
                                                "max_intra_op_parallelism"),
                               autotune=Holder("enabled", "autotune_algorithm"),
                               experimental_optimization=Holder("map_parallelization"))

    algorithms = SimpleNamespace(__members__={"HILL_CLIMB": "enum-hill-climb"},
                                 __getitem__=None)
    fake_tf = SimpleNamespace(data=SimpleNamespace(
        Options=options, experimental=SimpleNamespace(AutotuneAlgorithm=_Enum(algorithms))))
    built, missing = settings.dataset_options(fake_tf, {
        "tf_data.private_threadpool_size": 3, "tf_data.autotune.enabled": False,
        "tf_data.autotune.autotune_algorithm": "HILL_CLIMB",
        "tf_data.optimization.map_parallelization": None,
        "tf_data.autotune.min_parallelism": 2})
    assert built.threading.private_threadpool_size == 3
    assert built.autotune.enabled is False
    assert built.autotune.autotune_algorithm == "enum-hill-climb"
    assert built.experimental_optimization.map_parallelization is None
    assert missing == ["autotune.min_parallelism"]


class _Enum:
    def __init__(self, ns):
        self.__members__ = ns.__members__

    def __getitem__(self, name):
        return self.__members__[name]
