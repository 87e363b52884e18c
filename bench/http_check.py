#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks that a hello-world server of the wrk scenario speaks HTTP/1.1
correctly enough to be measured: keep-alive, pipelining, requests split
across reads, bodies, Connection: close, HTTP/1.0 and a bad request.

Usage: http_check.py PORT   (exit 0 and "http_check: N passed, 0 failed")
"""
import socket
import sys
import time

PORT = int(sys.argv[1])
OK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
      b"\r\nHello, World!")
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def connect():
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def closed_after(s):
    """True if the server closes: EOF (or a reset) with nothing more."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def keep_alive():
    s = connect()
    for _ in range(3):
        s.sendall(GET)
        assert read_exactly(s, len(OK)) == OK
    s.close()


def pipelined():
    s = connect()
    s.sendall(GET * 100)
    assert read_exactly(s, 100 * len(OK)) == OK * 100
    s.sendall(GET)
    assert read_exactly(s, len(OK)) == OK
    s.close()


def split():
    s = connect()
    req = GET + b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + GET
    for i in range(len(req)):
        s.send(req[i:i + 1])
        time.sleep(0.0005)
    assert read_exactly(s, 3 * len(OK)) == OK * 3
    s.close()


def body_is_not_a_request():
    s = connect()
    body = GET  # looks like a request, but it is the body
    s.sendall(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body + GET)
    assert read_exactly(s, 2 * len(OK)) == OK * 2
    s.settimeout(0.3)
    try:
        extra = s.recv(1)
    except socket.timeout:
        extra = b""
    assert extra == b"", "answered the body as a request"
    s.close()


def connection_close():
    s = connect()
    s.sendall(b"GET / HTTP/1.1\r\nconnection: Close\r\n\r\n" + GET)
    assert read_exactly(s, len(OK)) == OK
    assert closed_after(s)
    s.close()


def http10():
    s = connect()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert read_exactly(s, len(OK)) == OK
    assert closed_after(s)
    s.close()
    s = connect()
    s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
    assert read_exactly(s, 2 * len(OK)) == OK * 2
    s.close()


def bad_request():
    s = connect()
    s.sendall(GET + b"NONSENSE\r\n\r\n")
    assert read_exactly(s, len(OK)) == OK
    reply = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    s.close()


checks = [keep_alive, pipelined, split, body_is_not_a_request,
          connection_close, http10, bad_request]
failed = 0
for check in checks:
    try:
        check()
    except Exception as e:  # noqa: BLE001 - report every failure
        failed += 1
        print(f"http_check: {check.__name__} FAILED: {e!r}", file=sys.stderr)
print(f"http_check: {len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
