"""Nothing printed carries control characters or markup from a file or a study (#24): every text
printer escapes control characters, Markdown escapes markup, the HTML report escapes every string
(plot labels and hover text included), and a study cannot make tuner open a path."""

from __future__ import annotations

import re
import shutil

import optuna
import pytest
import yaml
from helpers import FIXTURES, run_cli

from tuner.base import render
from tuner.results import report_html

ESC = "\x1b]0;pwned\x07\x1b[2J"
LINK = '<a href="javascript:alert(1)">x</a>'
IMG = "<img src=https://evil.example/x.png>"
# a raw control byte of any kind, as a terminal would act on it
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
# markup a Markdown renderer would act on: a tag or a link not preceded by a backslash
RAW_MARKUP = re.compile(r"(?<!\\)<(img|a)\b|(?<!\\)\]\(|https?://")
STORAGE = "sqlite:///results/study.db"


def _no_control(*texts: str) -> None:
    for text in texts:
        assert not CONTROL.search(text), repr(text[:2000])


# -- render -------------------------------------------------------------------------------------


def test_plain_markdown_and_html_escape_what_they_must():
    assert render.plain(ESC + "\nfake") == "\\x1b]0;pwned\\x07\\x1b[2J\\nfake"
    assert render.terminal("a\x1b[2J\nb") == "a\\x1b[2J\nb"
    md = render.markdown(f"{IMG} [click](https://evil.example) a|b `code` *x* _y_")
    assert not RAW_MARKUP.search(md), md
    assert "\\|" in md and "\\`" in md and "\\*x\\*" in md
    assert render.markdown("intra_op_parallelism_threads") == "intra_op_parallelism_threads"
    assert render.html_text(LINK + "\x1b") == (
        "&lt;a href=&quot;javascript:alert(1)&quot;&gt;x&lt;/a&gt;\\x1b")


def test_a_table_cell_is_one_inert_line_in_every_format():
    t = render.Table(header=["name", "value"])
    t.add(ESC + "\nfake line", IMG + "|x")
    _no_control(t.text(), t.markdown())
    assert len(t.text().splitlines()) == 2
    assert not RAW_MARKUP.search(t.markdown()) and "\\|x" in t.markdown()


# -- a hostile study: report, show, compare, the "available:" list -------------------------------


def _hostile_study() -> None:
    """The searched study with hostile text where a study holds text: a failed trial's role and
    reason, a parameter name; a copy of it under a hostile name; another study's name."""
    study = optuna.load_study(study_name="study", storage=STORAGE)
    dist = optuna.distributions.IntDistribution(0, 4)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={LINK + ESC: 1},
        distributions={LINK + ESC: dist},
        user_attrs={"role": ESC + "\nfake", "fail_reason": ESC + IMG + "\n0 baseline COMPLETE"}))
    optuna.copy_study(from_study_name="study", from_storage=STORAGE, to_storage=STORAGE,
                      to_study_name="copy" + ESC)
    optuna.create_study(study_name="other" + ESC, storage=STORAGE)


def test_report_of_a_hostile_study_prints_nothing_raw(small_study, capsys, tmp_path):
    _hostile_study()
    # a failed trial whose record is well-formed (its role one printable line) but whose reason
    # holds markup: listed, with the markup shown as text (a role with control characters makes
    # its trial an error row instead, whose note shows the role escaped)
    optuna.load_study(study_name="study", storage=STORAGE).add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL,
        user_attrs={"role": "screen", "fail_reason": IMG + " crashed"}))
    code, out, err = run_cli(capsys, "report", "--storage", STORAGE, "--study-name", "study",
                             "--html", "r.html")
    assert code == 0, err
    _no_control(out, err)
    assert "\\x1b]0;pwned\\x07" in out          # shown, escaped
    assert "\n0 baseline COMPLETE" not in out.replace("\n0     baseline", "")
    page = (tmp_path / "r.html").read_text()
    assert "\x1b" not in page and "\x07" not in page   # (plotly.js itself holds tabs)
    assert "<img src=" not in page and 'href="javascript' not in page
    assert '<a href=\\"javascript' not in page  # nor in a figure's JSON
    assert "&lt;img src=" in page


def test_available_study_names_are_escaped(small_study, capsys):
    _hostile_study()
    for argv in (["report", "--storage", STORAGE], ["show", "--storage", STORAGE],
                 ["report", "--storage", STORAGE, "--study-name", "nope"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2
        _no_control(out, err)
        assert err.count("\n") == 1 and "other\\x1b]0;pwned" in err
        assert "copy\\x1b]0;pwned" in err


def test_show_and_compare_refuse_a_hostile_study_name_in_one_inert_line(small_study, capsys):
    _hostile_study()
    tuned = "results/study/tuned.yaml"
    name = "copy" + ESC
    for argv in (["show", "--storage", STORAGE, "--study-name", name],
                 ["show", "--storage", STORAGE, "--study-name", name, "--format", "markdown"],
                 ["compare", tuned, "--storage", STORAGE, "--study-name", name]):
        code, out, err = run_cli(capsys, *argv)
        assert (code, out) == (2, "")
        _no_control(err)
        assert err.count("\n") == 1 and "copy\\x1b]0;pwned\\x07" in err


def test_figures_escape_labels_titles_and_hover_text():
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[0.5], y=[LINK], text=["0.5"], orientation="h", name=LINK,
                           hovertemplate=[f"{LINK} (Int): 0.5<extra></extra>"],
                           hovertext=[f"{{<br>  \"p\": \"{LINK}\"<br>}}"]))
    fig.update_layout(title=LINK)
    fig.update_xaxes(title=LINK)
    report_html._styled(fig)
    shown = str(fig.to_plotly_json())
    assert "<a href" not in shown and "&lt;a href=&quot;javascript" in shown
    assert "<extra></extra>" in shown and "<br>" in shown  # the figure's own tags still work


# -- a hostile tuned file: show, compare, export ----------------------------------------------


def _tuned(tmp_path, change) -> str:
    doc = yaml.safe_load((FIXTURES / "branchy.yaml").read_text())
    change(doc)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_markdown_show_of_a_tuned_file_escapes_markup(tmp_path, capsys):
    def change(doc):
        # show prints its verdict from the result, not the file's summary: markup where it
        # is printed as it is, the workload's builder
        doc["workload"]["model"] = f"{IMG} [click here](https://evil.example)"
        doc["study"]["name"] = "a|b`c`"

    path = _tuned(tmp_path, change)
    code, out, err = run_cli(capsys, "show", path, "--format", "markdown")
    assert code == 0, err
    assert not RAW_MARKUP.search(out), out
    assert "\\<img src=https:\\/\\/evil.example/x.png\\>" in out
    assert "a\\|b\\`c\\`" in out
    code, out, err = run_cli(capsys, "compare", path, str(FIXTURES / "branchy.yaml"),
                             "--format", "markdown")
    assert code == 0, err
    assert not RAW_MARKUP.search(out), out


def test_a_control_character_in_an_env_value_is_refused_not_printed(tmp_path, capsys):
    def change(doc):
        doc["settings"]["env"] = {"KMP_AFFINITY": "granularity=fine" + ESC}

    path = _tuned(tmp_path, change)
    for fmt in ("shell", "docker", "tf-serving", "dotenv", "k8s"):
        code, out, err = run_cli(capsys, "export", path, "--format", fmt)
        assert code == 2 and out == ""
        _no_control(err)
        assert "settings.env.KMP_AFFINITY" in err and "control character" in err


def test_a_study_cannot_make_show_open_a_path(small_study, capsys, tmp_path):
    # the last search's tuned file, copied where the study says its output went, with other
    # settings: what show prints must come from the study, never from a path the study names
    elsewhere = tmp_path / "elsewhere.yaml"
    shutil.copy("results/study/tuned.yaml", elsewhere)
    doc = yaml.safe_load(elsewhere.read_text())
    doc["settings"]["intra_op_parallelism_threads"] = 31
    elsewhere.write_text(yaml.safe_dump(doc, sort_keys=False))
    study = optuna.load_study(study_name="study", storage=STORAGE)
    last = dict(study.user_attrs["tuner.last_result"])
    last.pop("settings", None)
    last["output"] = str(elsewhere)
    study.set_user_attr("tuner.last_result", last)
    opened = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    import builtins

    builtins.open, saved = spy, builtins.open
    try:
        for argv in (["show", "--storage", STORAGE],
                     ["compare", "--storage", STORAGE, "--study-name", "study", "--study-name",
                      "study"]):
            code, out, err = run_cli(capsys, *argv)
            assert code == 0, err
            assert "predates recording the validated settings" in out
    finally:
        builtins.open = saved
    assert str(elsewhere) not in opened


@pytest.mark.parametrize("text", [ESC, "line\nbreak", "\u202eevil"])
def test_error_lines_escape_what_they_quote(capsys, text):
    code, out, err = run_cli(capsys, "show", "--storage", f"sqlite:///{text}.db")
    assert code == 2
    _no_control(err)
    assert err.count("\n") == 1 and "\u202e" not in err
