"""The preflight (what it learns, how it fails) and measurements under the host lock, with the
fake worker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import GOOD, assert_one_error_line, run_cli, run_search

from tuner.errors import WorkloadError


def test_preflight_failure_is_a_workload_error(fake_worker, write_config, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "preflight-fail")
    with pytest.raises(WorkloadError, match="preflight failed: workload.model: fake raised"):
        run_search(write_config())
    assert not (tmp_path / "results").exists()


def test_an_option_this_tensorflow_lacks_is_a_config_error(fake_worker, write_config, capsys):
    path = write_config(GOOD + "space:\n  tf_data:\n    autotune:\n      ram_budget: [1000000]\n")
    code, _, err = run_cli(capsys, "search", "--config", str(path))
    assert_one_error_line(code, err, "space.tf_data.autotune.ram_budget: the installed "
                                     "TensorFlow (fake-1.0) has no "
                                     "tf.data.Options().autotune.ram_budget; remove it")


def test_two_searches_on_one_host_never_measure_at_the_same_time(fake_worker, write_config,
                                                                 monkeypatch, tmp_path):
    log = tmp_path / "intervals.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_WINDOW_SLEEP", "0.05")
    path = write_config()
    procs = [subprocess.Popen([sys.executable, "-m", "tuner", "search", "--config", str(path),
                               "--study-name", f"s{i}", "--n-trials", "4", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    measurements: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        start, end, group = line.split()
        a, b = measurements.get(group, (float(start), float(end)))
        measurements[group] = (min(a, float(start)), max(b, float(end)))
    intervals = sorted(measurements.values())
    assert len(intervals) >= 2 * (4 + 1 + 2 + 4)  # preflight, trials and validation of both
    for (_, end_a), (start_b, _) in zip(intervals, intervals[1:]):
        assert end_a <= start_b, "two measurements overlapped"


def test_a_stop_whose_interrupt_was_swallowed_still_stops_the_next_measurement(fake_worker,
                                                                               write_config):
    # Python drops an exception raised inside a weakref callback (SQLAlchemy's cleanups), so a
    # SIGTERM's KeyboardInterrupt can be lost; the request it left behind stops the next child.
    from tuner import config, errors, knobs
    from tuner.base import host
    from tuner.search import measuring

    measurer = measuring.Measurer(config.load(write_config()), host.detect(), lambda line: None)
    assert measurer.measure(knobs.default_settings())["windows"]   # no stop asked: it measures
    errors.request_stop()
    try:
        with pytest.raises(KeyboardInterrupt):
            measurer.measure(knobs.default_settings())
    finally:
        errors.clear_stop()


def test_a_stop_recorded_while_a_child_runs_ends_the_wait_and_the_child(fake_worker,
                                                                       write_config,
                                                                       monkeypatch):
    # the interrupt was swallowed after the child started: the wait loop sees the request
    import threading
    import time

    from tuner import config, errors, knobs
    from tuner.base import host
    from tuner.search import measuring

    monkeypatch.setenv("FAKE_BEHAVIOUR", "hang-intra-0")
    measurer = measuring.Measurer(config.load(write_config()), host.detect(), lambda line: None)
    timer = threading.Timer(1.0, errors.request_stop)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            measurer.measure(knobs.default_settings())
    finally:
        timer.cancel()
        errors.clear_stop()
    assert time.monotonic() - started < 10   # the trial timeout is 20 s
