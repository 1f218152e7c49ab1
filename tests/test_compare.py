"""show and compare: golden outputs on committed tuned files, and significance verdicts on data
where the answer is known.

Golden files live in tests/golden/. After an intended change of output, regenerate them with
``TUNER_UPDATE_GOLDEN=1 python -m pytest tests/test_compare.py`` and review the diff.
"""

from __future__ import annotations

import difflib
import json
import os
import re

import pytest
import yaml
from helpers import FIXTURES, GOLDEN, run_cli

from tuner.results import compare
from tuner.results import model as results


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TUNER_UPDATE_GOLDEN"):
        path.write_text(actual)
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"golden/{name}", "actual output"))
        pytest.fail(f"output differs from tests/golden/{name} (set TUNER_UPDATE_GOLDEN=1 to "
                    f"accept it):\n{diff}", pytrace=False)


@pytest.fixture
def in_fixtures(monkeypatch):
    # labels are the paths as given: run where they are short and the same in every checkout
    monkeypatch.chdir(FIXTURES)

# -- golden outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture,fmt,golden", [
    ("branchy.yaml", "text", "show-branchy.txt"),
    ("branchy.yaml", "markdown", "show-branchy.md"),
    ("branchy.yaml", "json", "show-branchy.json"),
    ("quickstart-defaults.yaml", "text", "show-quickstart-defaults.txt"),
])
def test_show_golden(in_fixtures, capsys, fixture, fmt, golden):
    code, out, err = run_cli(capsys, "show", fixture, "--format", fmt)
    assert (code, err) == (0, "")
    check_golden(golden, out)


THREE = ("branchy.yaml", "branchy-rerun.yaml", "branchy-other-machine.yaml")


@pytest.mark.parametrize("fmt,golden", [("text", "compare-three.txt"),
                                        ("markdown", "compare-three.md"),
                                        ("json", "compare-three.json")])
def test_compare_golden(in_fixtures, capsys, fmt, golden):
    code, out, err = run_cli(capsys, "compare", *THREE, "--format", fmt)
    assert code == 0
    check_golden(golden, out)
    if fmt == "json":  # the warning also goes to stderr, where a CI log shows it
        assert "different machine" in err


def test_same_machine_pair_golden(in_fixtures, capsys):
    code, out, _ = run_cli(capsys, "compare", "branchy.yaml", "branchy-rerun.yaml")
    assert code == 0 and "WARNING" not in out
    check_golden("compare-same-machine.txt", out)

# -- what compare says -----------------------------------------------------------------------------


def test_different_machine_is_flagged_loudly_with_what_differs(in_fixtures, capsys):
    _, out, _ = run_cli(capsys, "compare", "branchy.yaml", "branchy-other-machine.yaml")
    assert out.startswith("!!!!")
    assert "WARNING: B (branchy-other-machine.yaml) was measured on a different machine" in out
    for field in ("cpu_model", "usable_cpus", "physical_cores", "tf_version"):
        assert re.search(rf"^\* {field} ", out, re.MULTILINE), f"{field} not marked as differing"
    assert re.search(r"^  sockets ", out, re.MULTILINE)  # the same: not marked
    assert "[DIFFERENT MACHINE]" in out
    _, out, _ = run_cli(capsys, "compare", "branchy.yaml", "branchy-other-machine.yaml",
                        "--format", "json")
    doc = json.loads(out)
    pair = doc["comparisons"][0]
    assert pair["same_machine"] is False
    assert any(d.startswith("tf_version: '2.21.0' vs '2.20.0'")
               for d in pair["machine_differences"])
    assert set(doc["differing"]["machine"]) >= {"cpu_model", "usable_cpus", "tf_version"}
    assert doc["differing"]["settings"] == ["intra_op_parallelism_threads"]
    # each over its own baseline, the two runs agree: that is the number to compare
    assert pair["speedup_ratio"] == pytest.approx(1.0, abs=1e-3)


def test_strict_refuses_different_machines(in_fixtures, capsys):
    code, _, err = run_cli(capsys, "compare", "branchy.yaml", "branchy-other-machine.yaml",
                           "--strict")
    assert code == 2 and err.startswith("error: compare --strict: ") and "tf_version" in err


def test_drift_between_runs_is_pointed_out(in_fixtures, capsys):
    # the rerun's defaults were also 1.10x faster: the machine changed, not (only) the settings
    _, out, _ = run_cli(capsys, "compare", "branchy.yaml", "branchy-rerun.yaml", "--format", "json")
    pair = json.loads(out)["comparisons"][0]
    assert pair["baseline_throughput"]["verdict"] == "faster"
    assert "defaults also measured" in pair["interpretation"]
    assert "not interleaved" in " ".join(json.loads(out)["notes"])


def test_show_and_compare_list_declared_knobs(tmp_path):
    fixture = __import__("pathlib").Path(__file__).parent / "fixtures" / "branchy.yaml"
    doc = yaml.safe_load(fixture.read_text())
    doc["settings"]["knobs"] = {"map_parallelism": "autotune"}
    doc["settings"]["tf_data"]["autotune"] = {"enabled": False}
    path = tmp_path / "knobbed.yaml"
    path.write_text(yaml.safe_dump(doc))
    shown = compare.show_table(results.from_tuned_file(path)).text()
    assert "knobs.map_parallelism" in shown and "autotune" in shown
    assert "tf_data.autotune.enabled" in shown and "(TensorFlow's default: not set)" in shown
    both = compare.compare_table(compare.compare_results([results.from_tuned_file(fixture),
                                                          results.from_tuned_file(path)])).text()
    assert "* knobs.map_parallelism" in both


BASE = [1000.0, 1012.0, 991.0, 1005.0, 997.0]


@pytest.mark.parametrize("factor,verdict", [
    (1.30, "faster"),
    (0.70, "slower"),
    (1.00, "within noise"),
    # clearly significant, but only 2%: smaller than the drift between separate runs
    (1.02, "within noise"),
])
def test_ratio_verdicts_on_constructed_data(factor, verdict):
    # the other side is the same values rescaled and reordered: no overlap for 1.3x and 0.7x,
    # complete overlap for 1.0x
    other = [v * factor for v in reversed(BASE)]
    if factor == 1.02:
        tight = [1000.0, 1001.0, 999.0, 1000.5, 999.5]
        v = compare.ratio_verdict([x * factor for x in tight], tight)
        assert v["p_value"] < 0.05 and v["ci95"][0] > 1  # significant...
        assert "drift" in v["reason"]                    # ...yet not called real
    else:
        v = compare.ratio_verdict(other, BASE)
    assert v["verdict"] == verdict
    assert v["ratio"] == pytest.approx(factor, rel=0.01)
    assert v["significant"] is (verdict in ("faster", "slower"))


def test_overlapping_noisy_samples_are_within_noise():
    a = [1000.0, 1080.0, 940.0, 1030.0, 960.0]
    b = [1010.0, 1090.0, 950.0, 1040.0, 990.0]  # 1% higher, noise 10%
    v = compare.ratio_verdict(b, a)
    assert v["verdict"] == "within noise" and v["p_value"] > 0.05
    assert v["ci95"][0] < 1 < v["ci95"][1]


def test_a_single_process_gets_no_verdict():
    v = compare.ratio_verdict([1200.0], BASE)
    assert v["verdict"] == "no verdict" and v["ci95"] is None and v["ratio"] == pytest.approx(1.2,
                                                                                              rel=0.01)

# -- errors, one line each -------------------------------------------------------------------------


@pytest.mark.parametrize("argv,message", [
    (["show", "missing.yaml"], "error: missing.yaml: tuned file not found"),
    (["show", "notes.txt"], "error: notes.txt: not a tuned file (no format_version)"),
    (["show", "branchy.yaml", "--format", "xml"],
     ("error: python -m tuner show: argument --format: 'xml' is not allowed; allowed: text, "
      "json, markdown")),
    (["show", "branchy.yaml", "--format", "jsn"],
     ("error: python -m tuner show: argument --format: 'jsn' is not allowed (did you mean "
      "'json'?); allowed: text, json, markdown")),
    (["compare", "branchy.yaml"],
     "error: compare: give at least two results (tuned files or --study-name), got 1"),
    (["compare", "branchy.yaml", "missing.yaml"], "error: missing.yaml: tuned file not found"),
    (["compare", "branchy.yaml", "--study-name", "x"],
     "error: --study-name 'x': no --storage given before it (nor $TUNER_STORAGE)"),
    (["report", "--storage", "sqlite:///nope.db"],
     "error: --storage: sqlite:///nope.db: no such database file ('nope.db')"),
    (["compare", "branchy.yaml", "branchy.yaml", "--alpha", "2"],
     ("error: python -m tuner compare: argument --alpha: expected a number between 0 and 1, "
     "got '2'")),
])
def test_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello: world\n")
    (tmp_path / "branchy.yaml").write_text((FIXTURES / "branchy.yaml").read_text())
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert err == message + "\n"
    assert out == ""
