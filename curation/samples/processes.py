"""What the local servers the tests and benches start share: a console script found beside this
interpreter (or on PATH), and free loopback ports."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def script(name: str, install_hint: str) -> str:
    """The `name` executable: beside this interpreter (a wheel's script) or on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"no `{name}` command: {install_hint}")
    return found


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports free right now (all held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
