"""Command line: ``python -m tuner <command>``. Each command maps its flags onto a plain function.

Errors print as one line, ``error: ...``, and exit with the error's code (2 for bad input);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from tuner.cli.file_commands import cmd_compare, cmd_export, cmd_report, cmd_run, cmd_show
from tuner.cli.flags import STORAGE_PRECEDENCE, storage_from
from tuner.cli.measure_commands import cmd_check, cmd_diagnose, cmd_search, cmd_size, print_summary
from tuner.cli.output import _terminal
from tuner.cli.parser import build_parser
from tuner.errors import TunerError

# main() looks the commands up here when it runs (tests replace one: cli.cmd_show = ...)
__all__ = ["STORAGE_PRECEDENCE", "build_parser", "cmd_check", "cmd_compare", "cmd_diagnose",
           "cmd_export", "cmd_report", "cmd_run", "cmd_search", "cmd_show", "cmd_size", "main",
           "os_error_line", "print_summary", "storage_from"]


def _on_sigterm(signum: int, frame: Any) -> None:
    # Orchestrators stop jobs with SIGTERM, a closed terminal sends SIGHUP, a user Ctrl-C: clean
    # up (kill the child and its process group, mark the trial). Recorded as well, in case the
    # exception lands in a callback that Python swallows it in (errors.request_stop).
    from tuner import errors

    errors.request_stop()
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from tuner.base.version import __version__

            print(__version__)
            return 0
        if args.subcommand is None:
            build_parser().print_help()
            return 2
        from tuner import errors

        errors.clear_stop()   # a stop asked of an earlier command in this process is done
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
        # `run` forwards signals to its command itself; under nohup a hang-up stays ignored
        if args.subcommand != "run" and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _on_sigterm)
        # Ctrl-C: Python's own handler raises the same KeyboardInterrupt but records nothing
        if args.subcommand != "run" and signal.getsignal(signal.SIGINT) is \
                signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigterm)
        # a blocked signal survives exec: a search started by a parent that blocked SIGTERM
        # would never see it (no stop, and its children run to their timeouts)
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, list(previous))
        try:
            commands = {"search": cmd_search, "diagnose": cmd_diagnose, "run": cmd_run,
                        "export": cmd_export, "show": cmd_show, "compare": cmd_compare,
                        "report": cmd_report, "size": cmd_size, "check": cmd_check}
            return commands[args.subcommand](args)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    except TunerError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_terminal(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output went away (`| head`): nothing to report, and the interpreter's
        # last flush of stdout must not fail again on the way out
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE
    except OSError as exc:
        # the last resort: commands name the path themselves where they can say more
        if debug:
            traceback.print_exc()
        print(f"error: {_terminal(os_error_line(exc))}", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    """``path: reason`` in one line, for an OSError no command turned into a better message."""
    text = exc.strerror or str(exc) or type(exc).__name__
    reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    names = []
    for name in (exc.filename, exc.filename2):
        if name is not None:
            name = os.fsdecode(name) if isinstance(name, bytes) else str(name)
            names.append(name if name.isprintable() else repr(name))
    return (" -> ".join(names) + ": " if names else "") + reason
