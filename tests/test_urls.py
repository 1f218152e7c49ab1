"""Storage URLs: the password never shown."""

from __future__ import annotations

from tuner.urls import mask_url


def test_password_is_masked():
    assert mask_url("postgresql://bob:s3cret@db/x") == "postgresql://bob:***@db/x"
    assert mask_url("sqlite:///results/x.db") == "sqlite:///results/x.db"
