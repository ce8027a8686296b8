#!/usr/bin/env python3
"""bench/idle-conns.py - hold N idle keep-alive HTTP/1.1 client connections open.

    bench/idle-conns.py PORT N HOLD_SECONDS

Opens N connections to 127.0.0.1:PORT, sends one `GET /` on each (keep-alive) and
reads its answer, so every connection has been through a whole request and sits in
the proxy's keep-alive state. Then prints `ready N` (or `failed K of N` after the
answers it could not get) and holds the connections, idle, for HOLD_SECONDS or until
it is killed. bench/scenarios.sh's `idle` scenario reads the proxy's RSS before and
while this holds them. Loopback only: the address is hard-wired.
"""

import selectors
import socket
import sys
import time

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BATCH = 256  # connections opened and answered at a time


def answered(buf):
    """Whether buf holds a whole response with a Content-Length body (the origin's 'ok')."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True  # no length: the head is enough for this purpose


def open_batch(port, n, deadline):
    """Opens n connections, sends the request on each, returns (socks, failures)."""
    sel = selectors.DefaultSelector()
    socks, bufs, failed = [], {}, 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect((HOST, port))
            s.sendall(REQUEST)
        except OSError:
            s.close()
            failed += 1
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
        bufs[s] = b""
    pending = set(socks)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                pending.discard(s)
                failed += 1
                continue
            bufs[s] += data
            if answered(bufs[s]):
                sel.unregister(s)
                pending.discard(s)
    for s in pending:
        sel.unregister(s)
        failed += 1
    sel.close()
    bad = [s for s in socks if s in pending or not answered(bufs[s])]
    for s in bad:
        s.close()
    return [s for s in socks if s not in bad], failed


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: idle-conns.py PORT N HOLD_SECONDS")
    port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + 120
    socks, failed = [], 0
    while len(socks) + failed < n:
        more, bad = open_batch(port, min(BATCH, n - len(socks) - failed), deadline)
        socks += more
        failed += bad
        if time.monotonic() >= deadline:
            break
    print(f"ready {n}" if failed == 0 else f"failed {failed} of {n}", flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
