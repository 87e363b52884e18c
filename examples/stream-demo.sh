#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The transport half of `make demo`: examples/echo-server and
# examples/echo-client on each engine, 200 connections for 2 seconds, every
# echoed byte checked; the server is stopped with SIGINT and must close
# cleanly. Usage: examples/stream-demo.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
status=0
for engine in uring epoll; do
    log=$(mktemp)
    "$build/examples/echo-server" --port 0 --engine "$engine" 2>"$log" &
    server=$!
    port=""
    for _ in $(seq 50); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "stream demo: the $engine server did not start"; cat "$log"; exit 1
    fi
    "$build/examples/echo-client" --port "$port" --engine "$engine" \
        --connections 200 --seconds 2 || status=1
    kill -INT "$server"
    wait "$server" || status=1
    grep -q "closed after" "$log" || { echo "stream demo: no clean close"; status=1; }
    rm -f "$log"
done
exit $status
