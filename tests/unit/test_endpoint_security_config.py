"""bearer / hmac / rateLimit / ${ENV:...} in rest.json: read, validated, and every error names file, key and fix."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.datastructures import Headers

from connectors.rest.config import read_rest_config
from connectors.rest.model import Security
from connectors.rest.security import BearerAuthenticator

CONVERTER = {"type": "json", "deviceNameExpression": "${dev}", "timeseries": [{"key": "t", "value": "${t}"}]}
TOKEN = "tok-unit-9f8e7d6c5b4a"


def rest(security: dict | None = None, fmt: str = "legacy", **extra: Any) -> dict:
    entry = {"endpoint": "/d", "HTTPMethod": "POST", "converter": CONVERTER, **extra}
    if security is not None:
        entry["security"] = security
    return {"server": {"port": 5000}, "mapping": [entry]} if fmt == "current" else {"mapping": [entry]}


def read(tmp_path: Path, data: dict, env: dict | None = None):
    path = tmp_path / "rest.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return read_rest_config(str(path), (), env or {})


def errors(tmp_path: Path, data: dict, env: dict | None = None) -> list[tuple[str, str]]:
    config, problems = read(tmp_path, data, env)
    assert (config is None) == bool(problems.errors)
    for problem in problems.errors:
        assert problem.file == str(tmp_path / "rest.json") and problem.expected
    return [(p.pointer, p.message) for p in problems.errors]


@pytest.mark.parametrize("fmt", ["legacy", "current"])
def test_bearer_tokens_inline_file_and_env(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "tokens").write_text(f"# comment\n\n {TOKEN}-2 \n#{TOKEN}-3\n{TOKEN}-4\n")
    data = rest({"type": "Bearer", "tokens": [TOKEN, "${ENV:TOK}"], "tokensFile": "keys/tokens"}, fmt)
    config, problems = read(tmp_path, data, {"TOK": TOKEN + "-env"})
    assert problems.errors == [] and config is not None
    security = config.mappings[0].security
    assert security.type == "bearer"
    assert security.tokens == (TOKEN, TOKEN + "-env", TOKEN + "-2", TOKEN + "-4")
    assert set(security.secrets()) == set(security.tokens)
    assert TOKEN not in repr(security)


@pytest.mark.parametrize(("security", "pointer", "text"), [
    ({"type": "bearer"}, "/mapping/0/security", "without any token"),
    ({"type": "bearer", "tokens": []}, "/mapping/0/security", "without any token"),
    ({"type": "bearer", "tokens": ["has space"]}, "/mapping/0/security/tokens/0", "cannot carry"),
    ({"type": "bearer", "tokens": [""]}, "/mapping/0/security/tokens/0", "is empty"),
    ({"type": "bearer", "tokensFile": "missing.txt"}, "/mapping/0/security/tokensFile", "does not exist"),
    ({"type": "bearer", "tokens": [TOKEN, "${ENV:NOT_SET_X}"]}, "/mapping/0/security/tokens/1",
     "environment variable NOT_SET_X is not set"),
    ({"type": "basic", "username": "u", "password": "${ENV:NOPE}"}, "/mapping/0/security/password",
     "environment variable NOPE is not set"),
    ({"type": "basic", "username": "u", "password": "${ENV:9bad}"}, "/mapping/0/security/password",
     "not a valid environment variable reference"),
    ({"type": "basic", "username": "u", "password": "${ENV:OPEN"}, "/mapping/0/security/password",
     "unterminated"),
    ({"type": "token"}, "/mapping/0/security/type", "is not a known value"),
])
def test_security_errors(tmp_path: Path, security: dict, pointer: str, text: str) -> None:
    found = errors(tmp_path, rest(security))
    assert any(p == pointer and text in m for p, m in found), found
    assert not any(TOKEN in m for _, m in found)


def test_tokens_file_without_tokens_and_with_a_bad_line(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    assert ("/mapping/0/security/tokensFile", f"tokens file {tmp_path / 'empty.txt'} holds no token") in errors(
        tmp_path, rest({"type": "bearer", "tokensFile": "empty.txt"}))
    (tmp_path / "bad.txt").write_text(f"{TOKEN}\nsecret with blanks\n")
    found = errors(tmp_path, rest({"type": "bearer", "tokensFile": "bad.txt"}))
    assert [p for p, _ in found] == ["/mapping/0/security/tokensFile"]
    assert "line 2 of" in found[0][1] and "secret with blanks" not in found[0][1]


def test_env_is_resolved_only_in_secrets(tmp_path: Path) -> None:
    data = rest({"type": "basic", "username": "${ENV:USER_X}", "password": "pre-${ENV:PW}-post"})
    config, problems = read(tmp_path, data, {"PW": "from-env", "USER_X": "nope"})
    assert problems.errors == [] and config is not None
    assert config.mappings[0].security.username == "${ENV:USER_X}"  # a username is no secret
    assert config.mappings[0].security.password == "pre-from-env-post"


def test_every_missing_variable_is_reported_at_once(tmp_path: Path) -> None:
    data = rest({"type": "basic", "username": "u", "password": "${ENV:A1}"})
    data["attributeUpdates"] = [{"requestUrlExpression": "http://x/${deviceName}",
                                 "security": {"type": "basic", "username": "r", "password": "${ENV:A2}"}}]
    data["deviceApi"] = {"devices": [{"accessToken": "${ENV:A3}", "deviceName": "d"}],
                         "provisioning": {"provisionDeviceKey": "k", "provisionDeviceSecret": "${ENV:A4}"}}
    found = errors(tmp_path, data)
    named = {m.split()[2] for _, m in found if "environment variable" in m}
    assert named == {"A1", "A2", "A3", "A4"}, found


BEARER = BearerAuthenticator(Security(type="bearer", tokens=(TOKEN, "second-token")))


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", "Bearer second-token",
                                    f"  Bearer   {TOKEN} "])
def test_bearer_accepts_each_token(header: str) -> None:
    assert BEARER.check(header) is True
    assert BEARER.refuse(Headers({"Authorization": header}), b"") is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN} x", f"Bearer {TOKEN}\u00e9", f"Token {TOKEN}",
                                    "Bearer \x00invalid"])
def test_bearer_refuses_everything_else(header: str | None) -> None:
    assert BEARER.check(header) is False
    refusal = BEARER.refuse(Headers({"Authorization": header} if header is not None else {}), b"")
    assert refusal is not None and refusal.status == 401
    assert refusal.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("limit", "pointer", "text"), [
    ({"requests": 0}, "/mapping/0/rateLimit/requests", "out of range"),
    ({"perSeconds": 1}, "/mapping/0/rateLimit", "missing required key 'requests'"),
    ({"requests": 5, "perSeconds": -1}, "/mapping/0/rateLimit/perSeconds", "out of range"),
    ({"requests": 5, "burst": 0}, "/mapping/0/rateLimit/burst", "out of range"),
    ({"requests": 5, "burst": 2.5}, "/mapping/0/rateLimit/burst", "is not"),
    ({"requests": 5, "by": "user"}, "/mapping/0/rateLimit/by", "is not a known value"),
    ({"requests": 5, "maxKeys": 0}, "/mapping/0/rateLimit/maxKeys", "out of range"),
    ({"requests": "5"}, "/mapping/0/rateLimit/requests", "is not"),
])
def test_rate_limit_errors(tmp_path: Path, limit: dict, pointer: str, text: str) -> None:
    found = errors(tmp_path, rest(rateLimit=limit))
    assert any(p == pointer and text in m for p, m in found), found


def test_rate_limit_read(tmp_path: Path) -> None:
    config, problems = read(tmp_path, rest(rateLimit={"requests": 10, "perSeconds": 60, "by": "device"}))
    assert problems.errors == [] and config is not None
    limit = config.mappings[0].rate_limit
    assert (limit.rate, limit.capacity, limit.by, limit.max_keys) == (10 / 60, 10, "device", 10_000)


@pytest.mark.parametrize(("security", "pointer", "text"), [
    ({"type": "hmac"}, "/mapping/0/security", "hmac security without a secret"),
    ({"type": "hmac", "secret": "s" * 20, "algorithm": "md5"}, "/mapping/0/security/algorithm", "not a known value"),
    ({"type": "hmac", "secret": "s" * 20, "header": "X Sig"}, "/mapping/0/security/header", "not an HTTP header"),
    ({"type": "hmac", "secret": "s" * 20, "timestampHeader": "x-signature"}, "/mapping/0/security/timestampHeader",
     "same header"),
    ({"type": "hmac", "secret": "s" * 20, "maxSkewSeconds": 0}, "/mapping/0/security/maxSkewSeconds", "out of range"),
    ({"type": "hmac", "secret": "${ENV:NO_HMAC}"}, "/mapping/0/security/secret", "NO_HMAC is not set"),
])
def test_hmac_errors(tmp_path: Path, security: dict, pointer: str, text: str) -> None:
    found = errors(tmp_path, rest(security))
    assert any(p == pointer and text in m for p, m in found), found


def test_short_hmac_secret_warns_and_settings_are_read(tmp_path: Path) -> None:
    config, problems = read(tmp_path, rest({"type": "HMAC", "secret": "short", "algorithm": "SHA512",
                                            "maxSkewSeconds": 30, "replayCacheSize": 50}, "current"))
    assert problems.errors == [] and config is not None
    assert [w.pointer for w in problems.warnings] == ["/mapping/0/security/secret"]
    settings = config.mappings[0].security.hmac
    assert (settings.algorithm, settings.max_skew_seconds, settings.replay_cache_size) == ("sha512", 30, 50)
    assert "short" not in repr(config.mappings[0].security) + repr(settings)
