"""One verifying TLS context per CA file for all of Prefect's clients in a process.

No public way: the flow engine builds its clients itself with `get_client()` and no
`httpx_settings`, and no Prefect setting hands them a ready SSLContext (PREFECT_API_SSL_CERT_FILE
names a file, which each client loads again). What is replaced is the `ssl` name that
`prefect.client.orchestration` resolves when a client is built.
"""

from __future__ import annotations

import functools
import ssl
import types
from typing import Any

import prefect.client.orchestration as prefect_client_module

# The name the client module calls `ssl.create_default_context(cafile=...)` through.
CLIENT_SSL_ATTRIBUTE = "ssl"


class SharedVerifiedContexts(types.ModuleType):
    """The `ssl` module as Prefect's client module sees it, except that a *verifying* context
    for a given CA file is built once and shared.

    Prefect 3.8.8 builds `ssl.create_default_context(cafile=certifi.where())` for every client it
    constructs (even for an http:// API), and the engine constructs several per flow run: loading
    the CA bundle each time was the largest single cost of starting a run in a warm process.
    An SSLContext is safe to share across threads and connections. Contexts created any other
    way (e.g. the one Prefect then switches to CERT_NONE) are still created fresh.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    @staticmethod
    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        if cafile and capath is None and cadata is None and purpose == ssl.Purpose.SERVER_AUTH:
            return _verified_context(cafile)
        return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


@functools.lru_cache(maxsize=8)
def _verified_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def share_prefect_client_ssl_contexts() -> None:
    """From now on, Prefect clients built in this process share their verifying context."""
    setattr(prefect_client_module, CLIENT_SSL_ATTRIBUTE, SharedVerifiedContexts("ssl"))
