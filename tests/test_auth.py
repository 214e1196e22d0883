"""Bearer and basic credentials, parsed in one place and compared in constant time."""

import base64

import pytest

from flask_mpesa_monitor.auth import Credentials, parse_authorization


def basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


@pytest.mark.parametrize("header, expected", [
    ("Bearer abc", ("bearer", "abc")),
    ("bearer   abc  ", ("bearer", "abc")),
    ("BASIC eA==", ("basic", "eA==")),
    ("Bearer", None),
    ("Bearer   ", None),
    ("", None),
    (None, None),
])
def test_auth_parse_authorization(header, expected):
    assert parse_authorization(header) == expected


def test_auth_bearer_and_basic_both_accepted_when_both_set():
    auth = Credentials(token="tok-1", basic_auth="prom:pw:with:colons")
    assert auth.protected
    assert auth.matches("Bearer tok-1") and auth.matches("bEaReR tok-1")
    assert auth.matches(basic("prom:pw:with:colons"))
    assert not auth.matches("Bearer tok-2")
    assert not auth.matches(basic("prom:pw"))
    assert not auth.matches("Basic not-base64!")
    assert not auth.matches("Digest tok-1")
    assert not auth.matches(None)


def test_auth_only_the_configured_scheme_is_accepted():
    assert not Credentials(token="tok-1").matches(basic("tok-1"))
    assert not Credentials(basic_auth="u:p").matches("Bearer u:p")


def test_auth_open_when_nothing_configured_but_nothing_matches():
    auth = Credentials()
    assert not auth.protected
    assert auth.authorized(None) and auth.authorized("Bearer anything")
    assert not auth.matches("Bearer anything")  # e.g. /health/detailed shows no details
