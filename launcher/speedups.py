"""Start-up costs that dask, distributed and tornado pay in every process for nothing.

Every rank and every worker process pays them, so on a node with a rank on every core
(or more) they add up to seconds of a job's start. Each one here is removed without
changing what the upstream code computes; each names where it comes from.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
from collections.abc import Iterator
from typing import Any

import yaml

#: libyaml's loader (absent if PyYAML was built without libyaml): ten times faster than
#: PyYAML's own, and every rank parses.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@contextlib.contextmanager
def cheap_import() -> Iterator[None]:
    """Import dask and distributed (launcher/config.py imports dask, as the first
    module of ours that does) without two costs that buy nothing during an import.

    dask/config.py and distributed/config.py parse their default files (and the user's
    config files) with ``yaml.safe_load``, PyYAML's pure-Python loader: 35 ms for
    distributed.yaml and 6 ms for dask.yaml per process here, 3 ms and 0.7 ms with
    libyaml's ``CSafeLoader``, same result. And the import allocates some 60,000
    objects that live as long as the process, for which the cyclic garbage collector
    runs about 150 times (60 ms here) and finds nothing to free. So the collector
    waits, and ``yaml.safe_load`` is libyaml's, only while the import runs: user code
    that calls ``yaml.safe_load`` later gets PyYAML's own.
    """
    original = yaml.safe_load
    yaml.safe_load = functools.partial(yaml.load, Loader=YAML_LOADER)
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        yaml.safe_load = original
        if collecting:
            gc.enable()


def import_distributed() -> None:
    """Import distributed (see cheap_import), then set what it has created aside.

    ``gc.freeze`` moves every object alive now out of the collector's sight: later full
    collections in the rank do not walk the import's objects again, and neither do
    those in the worker processes forked from it (launcher/forkserver.py), which would
    otherwise write to, and so copy, most of the memory pages they share with the rank.
    Then accepted TLS connections skip a context they never use, and re-reading the
    config parses as the import did.
    """
    if "distributed" not in sys.modules:
        with cheap_import():
            import distributed  # noqa: F401
        gc.freeze()
    _accepted_tls_streams_skip_default_context()
    _config_refresh_parses_with_libyaml()


@functools.cache  # once per process
def _config_refresh_parses_with_libyaml() -> None:
    """A nanny's worker process starts by reading the user's Dask config files again
    (``dask.config.refresh()`` in distributed's ``WorkerProcess._run``), with PyYAML's
    pure-Python loader: 45 ms per worker process here for dask-jobqueue's
    ~/.config/dask/jobqueue.yaml alone, which every user of dask-jobqueue (the
    tutorial's way) has. ``refresh`` runs inside ``cheap_import`` instead: same files,
    same result, libyaml's loader. Installed in the rank, so the worker processes
    forked from it (launcher/forkserver.py) inherit it.
    """
    import dask.config

    refresh = dask.config.refresh

    @functools.wraps(refresh)
    def refresh_with_libyaml(*args: Any, **kwargs: Any) -> None:
        with cheap_import():
            refresh(*args, **kwargs)

    dask.config.refresh = refresh_with_libyaml


@functools.cache  # once per process
def _accepted_tls_streams_skip_default_context() -> None:
    """tornado's TCPServer wraps an accepted socket with the server's context, then
    makes an ``SSLIOStream`` of it without ``ssl_options``, and that constructor builds
    tornado's default *client* context (``netutil._client_ssl_defaults``), which loads
    the system's CA bundle: 50 ms, once in every process that accepts a TLS connection
    (the scheduler, every nanny, every worker process that serves data). An accepted
    stream never uses it (only ``connect``, on the client side, wraps a socket with
    it): so accepted streams are given a bare context that costs nothing. tornado 6.5
    and older built both default contexts at import, in every process; since 6.6
    (tornado PR #3738) they are built on first use, which is this accept.
    """
    import ssl

    import tornado.iostream
    import tornado.tcpserver

    unused = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no certificates: nothing to load

    class AcceptedSSLIOStream(tornado.iostream.SSLIOStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("ssl_options", unused)
            super().__init__(*args, **kwargs)

    tornado.tcpserver.SSLIOStream = AcceptedSSLIOStream  # type: ignore[misc]
