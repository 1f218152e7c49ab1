"""The results model: a tuned file or a study read as one ``Result`` (through ``show``)."""

from __future__ import annotations

import json

import pytest
from helpers import (
    FIXTURES,
    run_cli,
)


def test_a_damaged_tuned_file_names_the_field(tmp_path, capsys):
    text = (FIXTURES / "branchy.yaml").read_text().replace("    - 3514.39\n", "    - fast\n")
    (tmp_path / "bad.yaml").write_text(text)
    code, _, err = run_cli(capsys, "show", str(tmp_path / "bad.yaml"))
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'bad.yaml'}: result.throughput.per_process: "
                          f"expected a list of positive numbers")


def test_show_and_compare_read_a_study(small_study, capsys):
    code, out, err = run_cli(capsys, "show", "--storage", "sqlite:///results/study.db",
                             "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["source"] == {"kind": "study", "name": "study",
                             "storage": "sqlite:///results/study.db"}
    assert doc["verdict"] == small_study.tuned["verdict"]
    # the study records the validated settings and numbers: the same as the tuned file
    tuned_doc = small_study.tuned
    assert doc["throughput"]["per_process"] == pytest.approx(
        tuned_doc["result"]["throughput"]["per_process"], rel=1e-5)
    assert doc["settings"]["intra_op_parallelism_threads"] == \
        tuned_doc["settings"]["intra_op_parallelism_threads"]
    code, out, err = run_cli(capsys, "compare", small_study.tuned_path, "--storage",
                             "sqlite:///results/study.db", "--study-name", "study",
                             "--format", "json")
    assert code == 0, err
    pair = json.loads(out)["comparisons"][0]
    assert pair["same_machine"] and pair["throughput"]["ratio"] == pytest.approx(1.0, rel=1e-5)
    assert pair["throughput"]["verdict"] == "within noise"
