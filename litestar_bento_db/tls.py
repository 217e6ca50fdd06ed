"""TLS settings in one vocabulary for every driver: libpq's ``sslmode`` and file names.

:class:`TlsSettings` is what a :class:`~litestar_bento_db.DatabaseConfig` asks for
(``ssl_mode``, ``ssl_root_cert``, ``ssl_cert``, ``ssl_key``, or the same in the URL:
libpq's ``sslmode``/``sslrootcert``/``sslcert``/``sslkey`` for PostgreSQL, SQLAlchemy's
``ssl_ca``/``ssl_cert``/``ssl_key``/``ssl_check_hostname`` for MySQL). Each driver's
adapter turns it into its ``connect()`` arguments; the URL keys are taken out of the URL
before the driver sees it (:func:`without_tls_keys`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.engine import URL, make_url

from litestar_bento_db._values import ConfigError

__all__ = [
    "HANDSHAKE_FAILED",
    "HOST_NAME_MISMATCH",
    "NO_TLS",
    "SSL_MODES",
    "SYSTEM_CA",
    "UNTRUSTED",
    "SslMode",
    "TlsSettings",
    "causes_of",
    "ssl_error_reason",
    "tls_fields_of_url",
    "without_tls_keys",
]

SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]

#: libpq's modes, weakest first: ``disable`` never encrypts, ``prefer`` encrypts when
#: the server can, ``require`` always encrypts (and checks the CA when one is given),
#: ``verify-ca`` checks the server's certificate against the CA, ``verify-full`` also
#: checks that it names the host connected to
SSL_MODES: Final[tuple[SslMode, ...]] = ("disable", "prefer", "require", "verify-ca", "verify-full")
#: ``ssl_root_cert`` value that means the system's trusted CAs (libpq's spelling)
SYSTEM_CA: Final = "system"

#: why a connection failed, for readiness and the CLI (no host, user or password in them)
NO_TLS: Final = "TLS: the server does not accept TLS connections"
HOST_NAME_MISMATCH: Final = "TLS: the server's certificate does not name the host connected to"
UNTRUSTED: Final = "TLS: the server's certificate is not trusted"
HANDSHAKE_FAILED: Final = "TLS: the handshake failed"
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH and _IP_ADDRESS_MISMATCH (in
#: ``SSLCertVerificationError.verify_code``)
_X509_NAME_MISMATCH: Final = frozenset({62, 63, 64})
#: a TLS session cut short (the server went away mid-handshake): a new try may work
_CUT_SHORT: Final = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)

#: libpq's URL keys -> ``DatabaseConfig`` fields
POSTGRES_URL_KEYS: Final = {
    "sslmode": "ssl_mode",
    "sslrootcert": "ssl_root_cert",
    "sslcert": "ssl_cert",
    "sslkey": "ssl_key",
}
#: SQLAlchemy's MySQL URL keys -> ``DatabaseConfig`` fields (``ssl_check_hostname`` is
#: read into the mode: a CA verifies the host name unless it is false)
MYSQL_URL_KEYS: Final = {"ssl_ca": "ssl_root_cert", "ssl_cert": "ssl_cert", "ssl_key": "ssl_key"}
_MYSQL_CHECK_HOSTNAME: Final = "ssl_check_hostname"
#: MySQL URL keys SQLAlchemy knows that have no equivalent here
MYSQL_UNSUPPORTED_KEYS: Final = ("ssl_capath", "ssl_cipher")
_ALL_KEYS: Final = (*POSTGRES_URL_KEYS, *MYSQL_URL_KEYS, _MYSQL_CHECK_HOSTNAME)
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class TlsSettings:
    """The TLS a connection asks for (resolved: the mode is always set)."""

    mode: SslMode
    """libpq's ``sslmode``."""
    root_cert: str | None = None
    """The CA file the server's certificate must chain to; ``"system"``: the system's CAs."""
    cert: str | None = None
    """The client certificate file (PEM), for servers that authenticate by certificate."""
    key: str | None = None
    """The client certificate's private key file (PEM); None: inside ``cert``."""

    @property
    def encrypts(self) -> bool:
        """Whether TLS is tried at all."""
        return self.mode != "disable"

    @property
    def required(self) -> bool:
        """Whether a connection without TLS is refused."""
        return self.mode not in ("disable", "prefer")

    @property
    def verifies_certificate(self) -> bool:
        """Whether the server's certificate is checked against the CA.

        ``require`` checks it too when a CA is given, as libpq does.
        """
        return self.mode in ("verify-ca", "verify-full") or (
            self.mode == "require" and self.root_cert is not None
        )

    @property
    def checks_host_name(self) -> bool:
        """Whether the certificate must name the host connected to."""
        return self.mode == "verify-full"

    def ssl_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` doing what the mode says (for drivers that take one).

        Raises:
            ConfigError: A file is not a PEM certificate (or key), or the key is
                encrypted; the message names the setting.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # TLS 1.2+, verifies by default
        if not self.verifies_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context.check_hostname = self.checks_host_name
            try:
                if self.root_cert == SYSTEM_CA:
                    context.load_default_certs()
                else:
                    context.load_verify_locations(cafile=self.root_cert)
            except ssl.SSLError:
                raise ConfigError(
                    f"ssl_root_cert (DB_SSL_ROOT_CERT): not a PEM CA certificate: {self.root_cert}"
                ) from None
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key, password=_no_key_password)
            except ssl.SSLError:
                raise ConfigError(
                    "ssl_cert, ssl_key (DB_SSL_CERT, DB_SSL_KEY): not a PEM certificate and "
                    f"its unencrypted private key: {self.cert}, {self.key or '(in ssl_cert)'}"
                ) from None
        return context


def _no_key_password() -> str:
    # OpenSSL would otherwise prompt on the terminal for an encrypted key's passphrase
    raise ConfigError("ssl_key (DB_SSL_KEY): the private key is encrypted; give it unencrypted")


def _query_value(url: URL, key: str) -> str | None:
    value = url.query.get(key)
    if value is None or isinstance(value, str):
        return value
    return value[-1] if value else None


def tls_fields_of_url(url: str | URL, database_type: str) -> dict[str, tuple[str, str]]:
    """The ``DatabaseConfig`` TLS fields a URL sets: field name -> (URL key, value).

    A MySQL URL with ``ssl_ca`` and ``ssl_check_hostname=false`` asks for ``verify-ca``
    (with ``ssl_ca`` alone the config's default is ``verify-full``; with only a client
    certificate, ``require``: what SQLAlchemy's MySQL dialects and PyMySQL do).

    Raises:
        ConfigError: A TLS key of the other database's vocabulary, or one with no
            equivalent here (``ssl_capath``, ``ssl_cipher``).
    """
    url = make_url(url) if isinstance(url, str) else url
    if database_type == "postgresql":
        keys, foreign = POSTGRES_URL_KEYS, (*MYSQL_URL_KEYS, _MYSQL_CHECK_HOSTNAME)
    elif database_type == "mysql":
        keys, foreign = MYSQL_URL_KEYS, (*POSTGRES_URL_KEYS, *MYSQL_UNSUPPORTED_KEYS)
    else:
        keys, foreign = {}, _ALL_KEYS
    wrong = [key for key in foreign if key in url.query]
    if wrong:
        raise ConfigError(
            f"url: {', '.join(wrong)} is not a TLS setting of {database_type} URLs; "
            "use ssl_mode, ssl_root_cert, ssl_cert, ssl_key (DB_SSL_*)"
        )
    fields = {
        field: (key, value) for key, field in keys.items() if (value := _query_value(url, key))
    }
    check = _query_value(url, _MYSQL_CHECK_HOSTNAME)
    if database_type == "mysql" and "ssl_root_cert" in fields and (check or "").lower() in _FALSE:
        fields["ssl_mode"] = (_MYSQL_CHECK_HOSTNAME, "verify-ca")
    return fields


def without_tls_keys(url: URL) -> URL:
    """The URL without the TLS keys (the adapter passes them to its driver its own way)."""
    present = [key for key in _ALL_KEYS if key in url.query]
    return url.difference_update_query(present) if present else url


def causes_of(error: BaseException) -> list[BaseException]:
    """``error``, its cause (or context), and theirs."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def ssl_error_reason(error: BaseException) -> str | None:
    """Why the TLS handshake failed, from the ``ssl`` error in ``error``'s chain.

    None when there is none, or it only says that the connection was cut (the server
    went away: not a TLS problem).
    """
    for cause in causes_of(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.verify_code in _X509_NAME_MISMATCH:
                return HOST_NAME_MISMATCH
            return f"{UNTRUSTED} ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _CUT_SHORT):
            return f"{HANDSHAKE_FAILED} ({cause.reason or type(cause).__name__})"
    return None
