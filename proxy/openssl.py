"""What Python's `ssl` does not expose (before Python 3.15), reached in the very libssl that
Python's `_ssl` module links: TLS 1.3 cipher suites, key-exchange groups and signature algorithms
of an `ssl.SSLContext`, and whether OpenSSL's FIPS provider is active.

It knows nothing of policies or listeners (`proxy.tlspolicy` says what to set). Setting these
per context leaves the process's OpenSSL configuration (a FIPS provider, its `system_default`)
in force, unlike an OPENSSL_CONF of our own, and touches no other context (upstream clients).
Every setter raises OpenSSLError; anything else escaping from here is a bug.
"""

from __future__ import annotations

import ctypes
import functools
import ssl
from typing import Any

from proxy.errors import ProxyError

# openssl/ssl.h: SSL_CTX_set1_groups_list and SSL_CTX_set1_sigalgs_list are macros over
# SSL_CTX_ctrl with these commands (stable since OpenSSL 1.1.1).
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_SET_SIGALGS_LIST = 98


class OpenSSLError(ProxyError, RuntimeError):
    """This Python/OpenSSL cannot apply a setting, or refused its value."""


@functools.cache
def _library() -> Any:
    """libssl as `_ssl` links it: dlopen of the extension module resolves symbols through its
    own dependencies, so these are the functions behind every `ssl.SSLContext`."""
    import _ssl

    try:
        lib = ctypes.CDLL(_ssl.__file__)
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
    except (OSError, AttributeError, TypeError) as e:
        raise OpenSSLError(f"Python's ssl module does not expose OpenSSL's functions to the edge ({e})") from e
    if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        raise OpenSSLError("the OpenSSL functions found are not those of Python's ssl module")
    return lib


def unavailable() -> str | None:
    """Why TLS 1.3 suites and groups cannot be set here, or None when they can."""
    try:
        _library()
        _pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    except OpenSSLError as e:
        return str(e)
    return None


def _pointer(context: ssl.SSLContext) -> int:
    """The SSL_CTX behind `context`: CPython's SSLContext object starts with it, right after
    the object header. Checked against the options Python reads through its own pointer."""
    lib = _library()
    address = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not address or lib.SSL_CTX_get_options(address) != int(context.options):
        raise OpenSSLError("this Python's SSLContext does not hold its SSL_CTX where CPython 3.11 to 3.14 do")
    return int(address)


def set_tls13_suites(context: ssl.SSLContext, suites: str) -> None:
    """SSL_CTX_set_ciphersuites: the TLS 1.3 cipher suites, colon-separated."""
    if _library().SSL_CTX_set_ciphersuites(_pointer(context), suites.encode()) != 1:
        raise OpenSSLError(f"OpenSSL refused the TLS 1.3 cipher suites {suites}")


def set_groups(context: ssl.SSLContext, groups: str) -> None:
    """SSL_CTX_set1_groups_list: the key-exchange groups, colon-separated (X25519, P-256, ...)."""
    if _library().SSL_CTX_ctrl(_pointer(context), _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.c_char_p(groups.encode())) != 1:
        raise OpenSSLError(f"OpenSSL refused the key-exchange groups {groups}")


def set_sigalgs(context: ssl.SSLContext, sigalgs: str) -> None:
    """SSL_CTX_set1_sigalgs_list: the signature algorithms a client offers."""
    if _library().SSL_CTX_ctrl(_pointer(context), _SSL_CTRL_SET_SIGALGS_LIST, 0, ctypes.c_char_p(sigalgs.encode())) != 1:
        raise OpenSSLError(f"OpenSSL refused the signature algorithms {sigalgs}")


def fips_provider_active() -> bool | None:
    """Whether OpenSSL's FIPS provider is loaded and active; None where that cannot be told
    (OpenSSL before 3.0, or no access to its functions)."""
    try:
        lib = _library()
        available = lib.OSSL_PROVIDER_available
    except (OpenSSLError, AttributeError):
        return None
    available.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return bool(available(None, b"fips"))
