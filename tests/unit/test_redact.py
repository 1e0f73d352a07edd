"""Secrets never reach the status page: configured credentials and secret-named keys are masked."""
from __future__ import annotations

from gateway.admin.redact import MASK, excerpt, redact


def test_secret_named_keys_in_json_are_masked_at_any_depth() -> None:
    text = redact('{"name":"dev1","password":"hunter2","nested":{"apiToken":"t-123","ok":1},'
                  '"list":[{"client_secret":"s"}]}', [])
    assert "hunter2" not in text and "t-123" not in text and '"s"' not in text
    assert '"name":"dev1"' in text and '"ok":1' in text and text.count(MASK) == 3


def test_broken_json_and_form_bodies_are_masked_as_text() -> None:
    assert "hunter2" not in redact('{"name": "dev1", "password": "hunter2', [])  # cut off mid-value
    assert "hunter2" not in redact('{"name": "dev1", "token": hunter2, "temp": ', [])
    assert redact("user=a&password=hunter2&temp=3", []) == f"user=a&password={MASK}&temp=3"


def test_configured_secrets_are_masked_wherever_they_appear() -> None:
    text = redact('{"note": "my gw token is gw-secret-token-1 ok", "temp": 3', ["gw-secret-token-1", "ab", ""])
    assert "gw-secret-token-1" not in text and MASK in text
    assert "ab" in redact("abc", ["ab"])  # too short to search for


def test_excerpt_is_cut_after_redaction() -> None:
    body = b'{"password":"' + b"x" * 300 + b'"}'
    shown = excerpt(body, [], limit=40)
    assert "xxx" not in shown and shown.endswith("}")
    long = excerpt(b'{"temp": "' + b"1" * 300, [], limit=40)
    assert len(long) == 41 and long.endswith("…")
