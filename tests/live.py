"""Serve an application over real HTTP on loopback, in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from waitress import wasyncore
from waitress.server import create_server

# How long one turn of the server's socket loop waits, in seconds: the
# longest a stop request waits for the loop to notice it.
LOOP_TURN_SECONDS = 0.05


@contextlib.contextmanager
def serve(app, *, threads: int = 8) -> Iterator[str]:
    """Serve ``app`` with waitress on 127.0.0.1 and a free port; yield its base URL.

    waitress speaks HTTP/1.1 with keep-alive the way production servers do;
    wsgiref answers HTTP/1.0 and closes connections that clients such as the
    JDK's HttpClient then try to reuse.

    The socket loop runs one turn at a time until the block ends. It stops
    before the request threads finish and before the sockets close, so no
    thread polls a closed socket (closing the server under a running loop
    raised EBADF in the loop's thread).
    """
    server = create_server(app, host="127.0.0.1", port=0, threads=threads,
                           ident="fkod-test")
    stopping = threading.Event()

    def run_loop() -> None:
        while not stopping.is_set():
            server.asyncore.loop(timeout=LOOP_TURN_SECONDS, map=server._map,
                                 use_poll=server.adj.asyncore_use_poll, count=1)

    thread = threading.Thread(target=run_loop, name="fkod-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        server.task_dispatcher.shutdown()
        # Closes the listening socket and every open connection.
        wasyncore.close_all(server._map)
