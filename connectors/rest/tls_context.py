"""The server-side TLS context of the REST connector: loads and checks the certificate and key."""
from __future__ import annotations

import os
import ssl

__all__ = ["TlsConfigError", "build_context"]


class TlsConfigError(Exception):
    """The certificate or key cannot be used; the message names the file and the reason."""


def build_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side context (TLS >= 1.2, no renegotiation) with ``cert`` and ``key`` loaded.

    ``~`` is expanded. Raises TlsConfigError naming the file at fault; never prompts for a
    passphrase (an encrypted key is an error).
    """
    cert_path, key_path = os.path.expanduser(cert), os.path.expanduser(key)
    for label, path in (("certificate", cert_path), ("key", key_path)):
        if not path:
            raise TlsConfigError(f"TLS {label} file is not set")
        if not os.path.isfile(path):
            raise TlsConfigError(f"TLS {label} file {path!r} does not exist or is not a file")
        if not os.access(path, os.R_OK):
            raise TlsConfigError(f"TLS {label} file {path!r} is not readable by this process")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert_path)
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise TlsConfigError(f"TLS certificate file {cert_path!r} holds no PEM certificate "
                             f"({getattr(exc, 'reason', None) or exc})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_alpn_protocols(["http/1.1"])
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        asked.append(True)
        return b""

    try:
        context.load_cert_chain(cert_path, key_path, password=no_passphrase)
    except ssl.SSLError as exc:
        if asked:
            raise TlsConfigError(f"TLS key file {key_path!r} is encrypted; give an unencrypted key "
                                 f"(readable only by the gateway's user)") from None
        raise TlsConfigError(f"TLS key file {key_path!r} is not a PEM private key matching certificate "
                             f"{cert_path!r} ({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsConfigError(f"TLS certificate {cert_path!r} / key {key_path!r} cannot be read: "
                             f"{exc.strerror or exc}") from None
    return context
