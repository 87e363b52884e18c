# SPDX-License-Identifier: MIT
"""pytest-asyncio's own event_loop fixture, with pact's policy installed
(conftest.py): every test runs on a pact loop, on the engine PACT_ENGINE
names."""
import asyncio
import hashlib
import os

import pytest
import pytest_asyncio

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')


def check_pact(loop):
    assert isinstance(loop, pa.Loop)
    if ENGINE in ('uring', 'epoll'):
        assert loop.engine == ENGINE


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest_asyncio.fixture
async def echo_server():
    # An async fixture: set up and torn down on the test's loop.
    server = await asyncio.start_server(echo, '127.0.0.1', 0)
    check_pact(asyncio.get_running_loop())
    yield server.sockets[0].getsockname()
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_the_running_loop_is_pact(event_loop):
    assert asyncio.get_running_loop() is event_loop
    check_pact(event_loop)


@pytest.mark.asyncio
async def test_echo_through_an_async_fixture(echo_server):
    reader, writer = await asyncio.open_connection(*echo_server)
    assert type(writer.transport).__module__ == 'pact._pact'
    data = hashlib.sha256(b'pytest').digest() * 32768  # 1 MiB
    writer.write(data)
    writer.write_eof()
    assert await reader.read() == data
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize('n', [1, 10, 100])
async def test_parametrized_tasks(n):
    check_pact(asyncio.get_running_loop())

    async def square(i):
        await asyncio.sleep(0.001)
        return i * i
    assert await asyncio.gather(*[square(i) for i in range(n)]) == \
        [i * i for i in range(n)]


def test_a_synchronous_test_drives_the_fixture_loop(event_loop):
    check_pact(event_loop)

    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()
    assert event_loop.run_until_complete(main()) is event_loop


@pytest.mark.asyncio
async def test_each_test_gets_a_fresh_loop(event_loop):
    # pytest-asyncio closes the loop after each test: none is reused.
    seen = getattr(test_each_test_gets_a_fresh_loop, 'seen', [])
    assert all(prev.is_closed() for prev in seen)
    seen.append(event_loop)
    test_each_test_gets_a_fresh_loop.seen = seen
