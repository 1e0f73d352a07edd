"""Basic credentials: right ones pass, everything else is refused without raising."""
import base64

import pytest

from connectors.rest.model import Security
from connectors.rest.security import BasicAuthenticator


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTH = BasicAuthenticator(Security(type="basic", username="user", password="pa:ss wörd"))


def test_right_credentials_pass():
    assert AUTH.check(basic("user", "pa:ss wörd")) is True
    assert AUTH.check("basic " + basic("user", "pa:ss wörd").split()[1]) is True


@pytest.mark.parametrize("header", [
    None, "", "Basic", "Basic ", basic("user", "wrong"), basic("other", "pa:ss wörd"), basic("", ""),
    "Bearer abc.def", "Digest username=user", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), basic("user", "pa:ss wörd") + "x" * 10000,
])
def test_anything_else_is_refused(header):
    assert AUTH.check(header) is False


def test_repr_hides_password():
    assert "pa:ss" not in repr(Security(type="basic", username="u", password="pa:ss"))
