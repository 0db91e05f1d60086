"""Serve an application over real HTTP on loopback, in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from waitress.server import create_server


@contextlib.contextmanager
def serve(app, *, threads: int = 8) -> Iterator[str]:
    """Serve ``app`` with waitress on 127.0.0.1 and a free port; yield its base URL.

    waitress speaks HTTP/1.1 with keep-alive the way production servers do;
    wsgiref answers HTTP/1.0 and closes connections that clients such as the
    JDK's HttpClient then try to reuse.
    """
    server = create_server(app, host="127.0.0.1", port=0, threads=threads,
                           ident="fkod-test")
    thread = threading.Thread(target=server.run, name="fkod-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        thread.join(timeout=5)
