"""The command line as a whole."""

from __future__ import annotations

import subprocess
import sys

from helpers import HERE


def test_importing_tuner_stays_light():
    code = ("import sys; import tuner, tuner.cli, tuner.compare, tuner.report, tuner.render, "
            "tuner.results; "
            "heavy = [m for m in ('tensorflow', 'optuna', 'plotly') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE.parent)


def test_ctrl_c_sigterm_and_sighup_all_record_the_stop_during_a_command(monkeypatch):
    """One handler for the three: it raises KeyboardInterrupt and records the stop, which a
    KeyboardInterrupt that Python swallowed in a callback would lose (errors.request_stop)."""
    import signal

    from tuner import cli

    seen = {}

    def show(args):
        seen.update({s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM,
                                                      signal.SIGHUP)})
        return 0

    monkeypatch.setattr(cli, "cmd_show", show)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli.main(["show", "tuned.yaml"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored
    finally:
        signal.signal(signal.SIGINT, before)
    assert seen[signal.SIGINT] is seen[signal.SIGTERM] is cli._on_sigterm
    # under nohup a hang-up stays ignored
    ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    assert seen[signal.SIGHUP] == (signal.SIG_IGN if ignored else cli._on_sigterm)
    # an ignored Ctrl-C (a background job) stays ignored
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert cli.main(["show", "tuned.yaml"]) == 0
    finally:
        signal.signal(signal.SIGINT, before)
    assert seen[signal.SIGINT] == signal.SIG_IGN


def test_a_search_started_with_sigterm_blocked_still_stops_on_it(tmp_path):
    """A blocked signal survives exec (a parent's mask): the command unblocks what it handles."""
    import signal
    import subprocess
    import sys

    script = ("import signal, sys\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
              "import tuner.cli\n"
              "def show(args):\n"
              "    print('ready', file=sys.stderr, flush=True)\n"
              "    __import__('time').sleep(30)\n"
              "    return 0\n"
              "tuner.cli.cmd_show = show\n"
              "sys.exit(tuner.cli.main(['show', 'x.yaml']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in err
