"""The contract every knob of the registry keeps, on a few simulated machines: its default is a
candidate, every candidate passes its check, the tuned file keeps every candidate (flat -> the
file's layout -> flat, through YAML and the file's reader), and labels tell knobs apart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from helpers import fake_machine

from tuner import knobs
from tuner.base import host
from tuner.knobs import settings
from tuner.tuned.reader import check_settings

ROOT = Path(__file__).resolve().parent.parent
TCMALLOC = "usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
JEMALLOC = "usr/lib/x86_64-linux-gnu/libjemalloc.so.2"

MACHINES = {
    # name: (fake_machine arguments, affinity, (tf_version, onednn_default, openmp))
    "one-cpu": (dict(cpus=4), [2], ("2.21.0", None, None)),
    "two-cpus": (dict(cpus=2), [0, 1], ("2.21.0", True, False)),
    "quota": (dict(cpus=8, cgroup="0::/a\n", files={"sys/fs/cgroup/a/cpu.max": "150000 100000\n",
                                                    TCMALLOC: ""}),
              list(range(8)), ("2.20.0", False, True)),
    "two-nodes-smt": (dict(cpus=16, threads_per_core=2, sockets=2,
                           files={TCMALLOC: "", JEMALLOC: ""}),
                      list(range(16)), ("2.21.0", True, True)),
    # a Sapphire Rapids-like CPU: bfloat16 and float16 math (the precision knobs' candidates)
    "amx": (dict(cpus=2, flags="avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile"), [0, 1],
            ("2.21.0", True, False)),
}


@pytest.fixture(scope="module", params=list(MACHINES))
def machine(request, tmp_path_factory):
    args, affinity, tf = MACHINES[request.param]
    root = fake_machine(tmp_path_factory.mktemp(request.param), **args)
    return host.detect(root, affinity=affinity).with_tensorflow(*tf)


REGISTRY = [pytest.param(k, id=k.name) for k in knobs.KNOBS.values()]
DECLARED = knobs.DeclaredKnob("map_parallelism", [1, 2, knobs.AUTOTUNE, None, True, 0.5])


@pytest.mark.parametrize("knob", [*REGISTRY, pytest.param(DECLARED, id=DECLARED.name)])
def test_default_is_a_candidate_and_every_candidate_passes_the_check(knob, machine):
    candidates = knob.candidates(machine)
    assert knob.default in candidates
    assert len(candidates) == len({(type(v), v) for v in candidates})   # no repeats
    for value in candidates:
        assert knob.check(value, f"space.{knob.name}") == value
    assert knob.check("default", f"space.{knob.name}") == knob.default


@pytest.mark.parametrize("knob", [*REGISTRY, pytest.param(DECLARED, id=DECLARED.name)])
def test_the_tuned_file_keeps_every_candidate(knob, machine):
    for value in knob.candidates(machine):
        flat = {**knobs.default_settings(), knob.name: value}
        nested = settings.nest(flat, machine)
        written = yaml.safe_load(yaml.safe_dump(nested, sort_keys=False))
        check_settings(written, "tuned.yaml")
        assert settings.flatten(written) == flat, value


def test_the_tuned_file_keeps_related_process_knobs_together(machine):
    if machine.usable_cpus < 4:
        pytest.skip("needs 4 CPUs")
    flat = {**knobs.default_settings(), "cpus": 4, "instances": 2}
    nested = settings.nest(flat, machine)
    assert len(nested["cpus"]) == 4
    assert sorted(c for s in nested["instances"]["cpus"] for c in s) == nested["cpus"]
    assert settings.flatten(nested) == flat


def test_labels_and_names_are_unique():
    labels = [k.label for k in knobs.KNOBS.values()]
    assert len(set(labels)) == len(labels)
    assert list(knobs.KNOBS) == [k.name for k in knobs.KNOBS.values()]


def test_a_measured_child_gets_none_of_the_callers_controlled_variables():
    base = {var: "7" for var in settings.CONTROLLED_ENV}
    assert settings.child_environment(knobs.default_settings(), base) == {}
    every_env_knob = {k.name: k.candidates(_any_machine())[-1] for k in knobs.KNOBS.values()
                      if isinstance(k, knobs.EnvKnob)}
    env = settings.child_environment({**knobs.default_settings(), **every_env_knob}, base)
    assert env == {k.variable: every_env_knob[k.name] for k in knobs.KNOBS.values()
                   if isinstance(k, knobs.EnvKnob)}


def _any_machine() -> host.Machine:
    return host.Machine(visible_cpus=4, affinity=(0, 1, 2, 3), cpu_quota=None, usable_cpus=4,
                        physical_cores=4, sockets=1, numa_nodes=1, cpu_model="x", arch="x86_64",
                        hostname="h", python="3", memory_bytes=None,
                        extra={"cpu_flags": ["avx512_bf16", "amx_bf16"]})


def test_the_knob_table_in_the_docs_is_generated_from_the_registry():
    script = ROOT / "scripts" / "knobs_table.py"
    spec = importlib.util.spec_from_file_location("knobs_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (ROOT / "docs" / "knobs.md").read_text()
    assert module.rewrite(doc) == doc, "run python scripts/knobs_table.py --write"
    for knob in knobs.KNOBS.values():
        assert f"| `{knob.name}` |" in doc
