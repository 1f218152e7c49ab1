"""Storage URLs: the password never shown, in any spelling."""

from __future__ import annotations

import pytest

from tuner.base.urls import mask_secret, mask_url, shown

SECRET = "PW"

# (url, masked): every spelling a user may type or a driver may accept, and those that carry no
# secret (which must come back unchanged)
SPELLINGS = [
    ("postgresql://bob:PW@db/x", "postgresql://bob:***@db/x"),
    ("postgresql+psycopg://bob:PW@db/x", "postgresql+psycopg://bob:***@db/x"),
    ("postgresql://bob:PW@db:5432/x", "postgresql://bob:***@db:5432/x"),
    ("postgresql:/u:PW@db/x", "postgresql:/u:***@db/x"),
    ("postgresql:u:PW@db/x", "postgresql:u:***@db/x"),
    ("postgresql//u:PW@db/x", "postgresql//u:***@db/x"),
    ("postgresql://u:PW@db:abc/x", "postgresql://u:***@db:abc/x"),
    ("postgresql://u:PW@db+1/x", "postgresql://u:***@db+1/x"),
    ("postgresql://u:PW@db", "postgresql://u:***@db"),
    ("postgresql://u:PW@db?sslmode=require", "postgresql://u:***@db?sslmode=require"),
    ("u:PW@db/x", "u:***@db/x"),
    ("//u:PW@db/x", "//u:***@db/x"),
    ("postgresql://u:P@W@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:P/W@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:P?W@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:P%40W@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:PW@h1:5432,h2:5433/x", "postgresql://u:***@h1:5432,h2:5433/x"),
    ("postgresql://u:PW@[::1]:5432/x", "postgresql://u:***@[::1]:5432/x"),
    ("postgresql://u:PW@db/x?application_name=a@b", "postgresql://u:***@db/x?application_name=a@b"),
    ("mysql+pymysql://root:PW@localhost/optuna", "mysql+pymysql://root:***@localhost/optuna"),
    ("POSTGRESQL://u:PW@db/x", "POSTGRESQL://u:***@db/x"),
    ("postgresql://:PW@db/x", "postgresql://:***@db/x"),
    ("sqlite+pysqlcipher://:PW@/x.db", "sqlite+pysqlcipher://:***@/x.db"),
    ("sqlite+pysqlcipher://:PW@/x.db?cipher=aes-256-cfb&kdf_iter=64000",
     "sqlite+pysqlcipher://:***@/x.db?cipher=aes-256-cfb&kdf_iter=64000"),
    ("postgresql://u@db/x?password=PW", "postgresql://u@db/x?password=***"),
    ("postgresql://db/x?user=u&password=PW", "postgresql://db/x?user=u&password=***"),
    ("postgresql://db/x?sslpassword=PW", "postgresql://db/x?sslpassword=***"),
    ("postgresql://db/x?sslmode=verify-full&sslkey=PW", "postgresql://db/x?sslmode=verify-full&sslkey=***"),
    ("postgresql://db/x?access_token=PW", "postgresql://db/x?access_token=***"),
    ("postgresql://db/x?PASSWORD=PW", "postgresql://db/x?PASSWORD=***"),
    ("postgresql://db/x?pass%77ord=PW", "postgresql://db/x?pass%77ord=***"),
    ("postgresql://db/x;password=PW", "postgresql://db/x;password=***"),
    ("postgresql://u:PW@db/x?password=PW", "postgresql://u:***@db/x?password=***"),
    ("sqlite:///x.db?password=PW", "sqlite:///x.db?password=***"),
    ("mysql://db/x?secret=PW", "mysql://db/x?secret=***"),
    ("db:5432/x?password=PW", "db:5432/x?password=***"),
    ("u:PW@db", "u:***@db"),
    ("postgresql://u:PW@db/x#frag", "postgresql://u:***@db/x#frag"),
    ("postgresql://u:PW@/x?host=/var/run/postgresql", "postgresql://u:***@/x?host=/var/run/postgresql"),
    ("postgresql://u:PW@db/x?auth_token=PW&sslmode=require",
     "postgresql://u:***@db/x?auth_token=***&sslmode=require"),
    # nothing to hide: unchanged
    ("sqlite:///results/x.db", "sqlite:///results/x.db"),
    ("sqlite:///results/u:PW@db/x.db", "sqlite:///results/u:PW@db/x.db"),
    ("sqlite:////abs/a@b.db", "sqlite:////abs/a@b.db"),
    ("postgresql://u@db/x", "postgresql://u@db/x"),
    ("postgresql://db/x?sslmode=require", "postgresql://db/x?sslmode=require"),
]


@pytest.mark.parametrize(("url", "masked"), SPELLINGS, ids=[u for u, _ in SPELLINGS])
def test_every_spelling_is_masked(url, masked):
    assert mask_url(url) == masked


def test_the_table_is_large_and_the_secret_never_survives():
    with_secret = [(u, m) for u, m in SPELLINGS if SECRET in u and "@db/x.db" not in u]
    assert len(with_secret) >= 34
    for url, _ in with_secret:
        assert SECRET not in mask_url(url).replace("PW@db/x.db", ""), url
        assert SECRET not in shown(url), url


def test_driver_messages_lose_the_secret_in_every_encoding():
    url = "postgresql://u:p%40ss@db/x"
    text = mask_secret("password authentication failed for p@ss (p%40ss) at " + url, url)
    assert "p@ss" not in text and "p%40ss" not in text


def test_shown_escapes_control_characters_and_bounds_length():
    assert "\x1b" not in shown("postgresql://u:PW@db/\x1b]0;x\x07")
    assert len(shown("sqlite:///" + "a" * 10_000)) < 200
    assert shown(["x"]) == "'list'"
