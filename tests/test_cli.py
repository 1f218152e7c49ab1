"""The command line as a whole."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import FIXTURES, HERE, assert_one_error_line, run_cli


def test_importing_tuner_stays_light():
    code = ("import sys; import tuner, tuner.cli, tuner.results.compare, tuner.results.report, "
            "tuner.base.render, tuner.results.model; "
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


# -- errors that name what the user did, and suggest the right name -------------------------------

REPO = HERE.parent
BUILDER_CONFIG = "workload:\n  model: wl.py:build_model\n  data: wl.py:build_data\n"


@pytest.mark.parametrize("argv,needles,absent", [
    (["report", "{fixtures}/branchy.yaml"],
     ["report:", "a tuned file", "python -m tuner show"], ["--size"]),
    (["compare", "{fixtures}/branchy.yaml", "sizes.yaml"],
     ["compare:", "sizes.yaml: a sizes file", "compare reads tuned files and studies"],
     ["settings: missing"]),
    (["search", "--config", "{repo}/configs/quickstart.yaml", "--batch-size", "8"],
     ["--batch-size goes with --model", "builder functions", "build_data()"],
     ["workload: section"]),
    (["search", "--config", "builders.yaml"],
     ["builders.yaml: workload.mode: missing", "predict, train, data"], ["None"]),
    (["show", "{repo}/configs/branchy.yaml"],
     ["a study config, not a tuned file", "search --config"], []),
    (["serach", "--config", "x.yaml"],
     ["'serach' is not a command (did you mean 'search'?)"], []),
    (["export", "{fixtures}/branchy.yaml", "--format", "dokcer"],
     ["'dokcer' is not allowed (did you mean 'docker'?)"], []),
    (["search", "--config", "typo.yaml"],
     ["typo.yaml: serch: unknown key (did you mean 'search'?)"], []),
    (["search", "--config", "knob.yaml"],
     ["space.intra_op_threads: unknown key (did you mean 'intra_op_parallelism_threads'?)"],
     []),
    (["search", "--config", "escape.yaml"],
     [r"'\x1b[31mserch': unknown key"], ["\x1b"]),
])
def test_an_error_names_what_the_user_did(tmp_path, capsys, argv, needles, absent):
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")
    (tmp_path / "builders.yaml").write_text(BUILDER_CONFIG)
    (tmp_path / "typo.yaml").write_text(BUILDER_CONFIG + "  mode: predict\nserch: {}\n")
    (tmp_path / "escape.yaml").write_text(BUILDER_CONFIG + '  mode: predict\n"\\e[31mserch": 1\n')
    (tmp_path / "knob.yaml").write_text(BUILDER_CONFIG + "  mode: predict\nspace:\n"
                                                         "  intra_op_threads: [1]\n")
    (tmp_path / "sizes.yaml").write_text("format_version: 1\nkind: sizes\n")
    argv = [a.format(fixtures=FIXTURES, repo=REPO) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    line = assert_one_error_line(code, err, *needles)
    for text in absent:
        assert text not in line
    assert out == ""


def test_a_suggestion_is_made_only_when_a_name_is_close():
    from tuner.base.render import did_you_mean

    assert did_you_mean("jsn", ("text", "json", "markdown")) == " (did you mean 'json'?)"
    assert did_you_mean("yaml", ("text", "json", "markdown")) == ""
    # an untrusted name comes back escaped
    assert "\x1b" not in did_you_mean("\x1bjson", ("\x1bjson",))


def test_an_unknown_knob_suggests_the_closest():
    from tuner import knobs
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError, match=r"space.tf_data.private_threadpool: unknown knob \(did "
                                          r"you mean 'tf_data.private_threadpool_size'\?\)"):
        knobs.check_overrides({"tf_data.private_threadpool": [1]})


# -- docs/cli.md: generated from the parser, and current ------------------------------------------

def _cli_doc():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_doc", REPO / "scripts" / "cli_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_generated_from_the_parser_and_current():
    module = _cli_doc()
    assert (REPO / "docs" / "cli.md").read_text() == module.page(), \
        "run python scripts/cli_doc.py --write"


def test_every_flag_of_every_command_is_in_its_usage_line_and_in_docs_cli_md():
    import argparse

    from tuner import cli

    module = _cli_doc()
    doc = (REPO / "docs" / "cli.md").read_text()
    for name, (parser, _) in module.commands(cli.build_parser()).items():
        section = doc.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        usage_line = " ".join(parser.format_usage().split())
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}`" in section, (name, option)
                assert f"[{option}" in usage_line or f" {option} " in usage_line, (name, option)
