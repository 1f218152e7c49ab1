"""tuner/base/files.py: the one writability check behind ``--output`` and ``--html``, message by
message, and the atomic write."""

from __future__ import annotations

import os

import pytest

from tuner.base import files
from tuner.errors import ConfigError

CASES = [  # (flag, what, make_folders, target under tmp, the message after "FLAG: TARGET: ")
    ("--output", "the tuned YAML", True, "sub",
     "is a directory; expected a file name for the tuned YAML"),
    ("--html", "the report", False, "sub",
     "is a directory; expected a file name for the report"),
    ("--html", "the report", False, "missing/r.html",
     "no such directory '{tmp}/missing'; create it first"),
    ("--output", "the tuned YAML", True, "file.txt/deeper/t.yaml",
     "'{tmp}/file.txt' is not a directory"),
    ("--html", "the report", False, "file.txt/r.html", "'{tmp}/file.txt' is not a directory"),
    ("--output", "the tuned YAML", True, "dangling/t.yaml",
     "'{tmp}/dangling' is a broken symbolic link"),
]


@pytest.mark.parametrize("flag,what,make_folders,target,message", CASES)
def test_check_writable_names_the_flag_the_path_and_why(tmp_path, flag, what, make_folders,
                                                        target, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(tmp_path))
    path = tmp_path / target
    with pytest.raises(ConfigError) as err:
        files.check_writable(path, flag, what, make_folders=make_folders)
    assert str(err.value) == f"{flag}: {path}: " + message.format(tmp=tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # nothing created


def test_check_writable_refuses_a_folder_without_write_permission(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    real_access = os.access   # root writes anywhere: the folder answers as it would to a user
    monkeypatch.setattr(files.os, "access",
                        lambda p, mode: real_access(p, mode) and str(p) != str(locked))
    for flag, what in (("--output", "the tuned YAML"), ("--html", "the report")):
        with pytest.raises(ConfigError) as err:
            files.check_writable(locked / "x", flag, what, make_folders=flag == "--output")
        assert str(err.value) == (f"{flag}: {locked / 'x'}: cannot write in {str(locked)!r}: "
                                  f"permission denied")


def test_check_writable_accepts_missing_folders_only_when_the_write_makes_them(tmp_path):
    files.check_writable(tmp_path / "a" / "b" / "t.yaml", "--output", "the tuned YAML",
                         make_folders=True)
    files.check_writable(tmp_path / "r.html", "--html", "the report", make_folders=False)
    with pytest.raises(ConfigError):
        files.check_writable(tmp_path / "a" / "r.html", "--html", "the report",
                             make_folders=False)
    assert not (tmp_path / "a").exists()


def test_write_text_atomic_makes_folders_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "t.yaml"
    files.write_text_atomic(target, "one\n")
    files.write_text_atomic(target, "two\n", durable=False)
    assert target.read_text() == "two\n"
    assert os.listdir(target.parent) == ["t.yaml"]


# -- every output proven creatable before the first child (#24) ---------------------------------


def test_an_output_whose_folder_cannot_be_made_is_refused_though_access_says_yes(tmp_path):
    # os.access says root may write under /proc; only creating something there tells the truth
    assert os.access("/proc", os.W_OK) or os.geteuid() != 0
    with pytest.raises(ConfigError) as err:
        files.check_writable("/proc/nope/t.yaml", "--output", "the tuned YAML", make_folders=True)
    assert str(err.value).startswith("--output: /proc/nope/t.yaml: cannot create a file in "
                                     "'/proc/nope': ")


def test_the_probe_leaves_nothing_behind(tmp_path):
    files.check_writable(tmp_path / "a" / "b" / "t.yaml", "--output", "the tuned YAML",
                         make_folders=True)
    files.check_writable(tmp_path / "t.yaml", "--output", "the tuned YAML", make_folders=True)
    assert os.listdir(tmp_path) == []


def test_a_folder_that_refuses_files_is_found_by_the_probe(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(ConfigError) as err:
        files.check_writable(tmp_path / "new" / "r.html", "--html", "the report",
                             make_folders=True)
    assert str(err.value) == (f"--html: {tmp_path}/new/r.html: cannot create a file in "
                              f"'{tmp_path}/new': Read-only file system")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [
    ["search", "--config", "{config}", "--output", "/proc/nope/t.yaml"],
    ["size", "--config", "{config}", "--output", "/proc/nope/sizes.yaml"],
    ["search", "--config", "{config}", "--output", "{tmp}/file.txt/t.yaml"],
])
def test_search_and_size_refuse_an_uncreatable_output_in_seconds(fake_worker, write_config,
                                                                  capsys, tmp_path, argv):
    import time

    from helpers import assert_one_error_line, run_cli

    (tmp_path / "file.txt").write_text("x\n")
    config = write_config()
    started = time.monotonic()
    code, _, err = run_cli(capsys, *(a.format(config=config, tmp=tmp_path) for a in argv))
    assert time.monotonic() - started < 10
    assert_one_error_line(code, err, "--output")
    assert not (tmp_path / "results").exists()   # no study, no preflight: nothing ran


@pytest.mark.parametrize("mask,private,mode", [
    (0o022, False, 0o644), (0o077, False, 0o600), (0o027, False, 0o640), (0o002, False, 0o664),
    (0o022, True, 0o600),
])
def test_written_files_honour_the_umask(tmp_path, mask, private, mode):
    old = os.umask(mask)
    try:
        files.write_text_atomic(tmp_path / "f.yaml", "x\n", private=private)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.yaml").st_mode & 0o777 == mode


def test_a_write_never_follows_a_symlink_at_the_target(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    link = tmp_path / "t.yaml"
    link.symlink_to(victim)
    files.write_text_atomic(link, "new\n")
    assert victim.read_text() == "precious\n" and victim.stat().st_mode & 0o777 == 0o600
    assert not link.is_symlink() and link.read_text() == "new\n"
