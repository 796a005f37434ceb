"""The Dask glue: a scheduler address -> a ``concurrent.futures`` executor on its cluster.

Everything else (the update's decode, the partitioned search) only sees a
``concurrent.futures.Executor``, so any executor works and Dask stays an optional extra
(``pip install 'difpy-index[cluster]'``), imported only when an address is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import DifpyIndexError, UsageError

if TYPE_CHECKING:
    from concurrent.futures import Executor

#: seconds to wait for the scheduler before giving up
CONNECT_TIMEOUT_S = 10


class ClusterError(DifpyIndexError):
    """The Dask scheduler cannot be reached (exit 1: the operation failed)."""


def check_address(address: str) -> str:
    """A scheduler address as Dask takes it: ``tcp://host:port`` (or tls://, inproc://)."""
    addr = address.strip()
    scheme, sep, rest = addr.partition("://")
    if not sep or scheme not in ("tcp", "tls", "inproc", "ucx", "ws", "wss") or not rest:
        raise UsageError(f"invalid scheduler address {address!r}: expected tcp://HOST:PORT")
    return addr


@contextlib.contextmanager
def dask_executor(address: str) -> Iterator[Executor]:
    """``distributed.Client(address).get_executor()``, closed on exit."""
    addr = check_address(address)
    try:
        from distributed import Client
    except ImportError as exc:
        raise UsageError(
            "--scheduler needs the cluster extra: pip install 'difpy-index[cluster]' "
            f"({exc.name or 'distributed'} is not installed)"
        ) from exc
    try:
        client = Client(addr, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:  # OSError, TimeoutError, or a comm error of the protocol
        raise ClusterError(f"cannot reach the Dask scheduler at {addr}: {exc}") from exc
    try:
        yield client.get_executor()
    finally:
        client.close()
