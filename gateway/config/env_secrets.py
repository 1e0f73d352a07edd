"""``${ENV:NAME}`` in secret values: the secret comes from the environment, not from the config file.

Only values under keys that hold secrets are resolved (``SECRET_KEYS``: passwords, tokens, HMAC
secrets, device API tokens and provisioning credentials), so ``${...}`` converter expressions are
never touched. A reference may be the whole value or part of it (``"${ENV:PREFIX}-fixed"``); there
is no escape for a literal ``${ENV:``. A variable that is not set, or a malformed reference, is a
config error naming the key and the variable, never the value.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.config.document import Problems
from gateway.config.locate import join

SECRET_KEYS = frozenset({"password", "secret", "tokens", "accessToken", "provisionDeviceKey",
                         "provisionDeviceSecret"})
_REFERENCE = re.compile(r"\$\{ENV:([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def resolve_env_secrets(data: Any, problems: Problems, env: Mapping[str, str], pointer: str = "") -> Any:
    """A copy of ``data`` with every ``${ENV:NAME}`` in a secret value replaced by the variable's value."""
    if isinstance(data, dict):
        result = {}
        for key, value in data.items():
            where = join(pointer, key)
            if key in SECRET_KEYS and isinstance(value, str):
                result[key] = _resolve(value, where, problems, env)
            elif key in SECRET_KEYS and isinstance(value, list):
                result[key] = [_resolve(item, join(where, i), problems, env) if isinstance(item, str) else item
                               for i, item in enumerate(value)]
            else:
                result[key] = resolve_env_secrets(value, problems, env, where)
        return result
    if isinstance(data, list):
        return [resolve_env_secrets(item, problems, env, join(pointer, i)) for i, item in enumerate(data)]
    return data


def _resolve(value: str, pointer: str, problems: Problems, env: Mapping[str, str]) -> str:
    if "${ENV:" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if not _NAME.fullmatch(name):
            problems.error(pointer, f"${{ENV:{name}}} is not a valid environment variable reference",
                           "${ENV:NAME} with NAME made of letters, digits and _ (not starting with a digit)")
            return ""
        if name not in env:
            problems.error(pointer, f"environment variable {name} is not set (referenced as ${{ENV:{name}}})",
                           f"set {name} in the gateway's environment (e.g. systemd Environment=, "
                           f"docker -e {name}=...), or write the secret itself")
            return ""
        return env[name]

    if "${ENV:" in _REFERENCE.sub("", value):
        problems.error(pointer, "unterminated ${ENV: reference (no closing '}')", "${ENV:NAME}")
    return _REFERENCE.sub(substitute, value)
