"""The edge's exception family: small and flat.

Each class also subclasses the builtin a caller already catches. Third-party exceptions are
translated once, where they are raised, with `from e`.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error edge-proxy raises on purpose."""


class ConfigError(ProxyError, ValueError):
    """The configuration is unusable. Carries every problem, each naming file and key."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class MaterialError(ProxyError, ValueError):
    """Certificate material was refused. Carries every problem as an operator-readable sentence.

    `may_settle` is true when some problem is what a drop still being written looks like (an
    empty or truncated file, a key that does not match the certificate yet): the watcher checks
    such material again before it reports it.
    """

    def __init__(self, problems: list[str] | tuple[str, ...], *, may_settle: bool = False) -> None:
        if not problems:
            raise ValueError("MaterialError needs at least one problem")
        self.problems = tuple(problems)
        self.may_settle = may_settle
        super().__init__("; ".join(self.problems))


class MaterialMissing(ProxyError, FileNotFoundError):
    """`tls.crt` or `tls.key` is not in the certificate directory. Never a rejection: the
    serving certificate stays."""


class ListenerError(ProxyError, OSError):
    """A listener could not start (address in use, permission denied)."""
