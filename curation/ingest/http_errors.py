"""Why a request failed, as the fetcher reports it: `Refused` (a request we will not make or
finish, with its reason code) and the classification of urllib3 / socket errors (timeouts, no
route, a short detail without addresses so reruns give the same manifest bytes)."""

from __future__ import annotations

import socket

from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError


class Refused(Exception):
    """A request we will not make or finish; carries the reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def causes(err: BaseException | None):
    """`err` and the exceptions it wraps (cause, context, or one in its args), at most 5 deep."""
    for _ in range(5):
        if err is None:
            return
        yield err
        wrapped = next((a for a in err.args if isinstance(a, BaseException)), None)
        err = err.__cause__ or err.__context__ or wrapped  # ProtocolError keeps its cause in args


def is_timeout(err: BaseException | None) -> bool:
    """True when `err` or an exception it wraps is a timeout."""
    return any(isinstance(e, (ReadTimeoutError, ConnectTimeoutError, socket.timeout, TimeoutError)) for e in causes(err))


_UNREACHABLE_ERRNO = frozenset({101, 113, 99, 97})  # ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT


def network_unreachable(err: BaseException) -> bool:
    """True when the connect failed because this machine has no route for the address's family."""
    return any(isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNO for e in causes(err))


def short(err: BaseException) -> str:
    """A detail without addresses or object ids, so reruns give the same manifest bytes."""
    name = type(err).__name__
    text = str(err)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "Remote end closed",
                   "IncompleteRead", "Broken pipe", "Name or service not known"):
        if marker.lower() in text.lower():
            return f"{name}: {marker}"
    return name
