"""The admin bearer token: read from `admin.token_file`, or created there (random, mode 0600).

Owns the token file and the comparison. It knows nothing about HTTP beyond the header's
`Bearer <token>` form.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("proxy.admin")

TOKEN_BYTES = 32  # 256 bits: guessing is hopeless, so no rate limit is needed in front of it
MAX_TOKEN_FILE_BYTES = 4096


def load_or_create_token(path: Path) -> str:
    """The token in `path`; when the file is missing or blank, a new random one written there.

    A new file is created atomically with mode 0600 (parent folders too), and never replaces a
    file another process created first. Raises OSError when the file cannot be read or written.
    """
    token = _read(path)
    if token:
        return token
    token = secrets.token_urlsafe(TOKEN_BYTES)
    _create(path, token, replace=path.exists())
    log.info("created a new admin token in %s", path)
    # A concurrent creator may have won the race; its token is the one in the file.
    return _read(path) or token


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TOKEN_FILE_BYTES + 1)
            mode = os.fstat(file.fileno()).st_mode
    except FileNotFoundError:
        return None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise OSError(f"{path} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it is not a token file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users (mode %o); chmod 600 it", path, stat.S_IMODE(mode))
    try:
        return data.decode("ascii").strip() or None
    except UnicodeDecodeError as e:
        raise OSError(f"{path} is not a token file: it holds non-ASCII bytes") from e


def _create(path: Path, token: str, *, replace: bool) -> None:
    """Write the token to a private temp file, then link it into place: a reader never sees a
    half-written token, and `os.link` refuses to clobber a file someone else just created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(token + "\n")
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temp, path)  # a blank token file is replaced; it held no usable token
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>`, compared in constant time."""
    if not authorization:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235 section 2.1: the scheme is case-insensitive
        return False
    # surrogatepass: a header with undecodable bytes still compares (and fails) in constant time.
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogatepass"), token.encode("ascii"))
