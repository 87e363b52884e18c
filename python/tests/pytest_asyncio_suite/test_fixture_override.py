# SPDX-License-Identifier: MIT
"""The other way pytest-asyncio 0.20 offers: a module overrides the
event_loop fixture and makes the pact loop itself."""
import asyncio
import os

import pytest

import pact.asyncio as pa

ENGINE = os.environ.get('PACT_ENGINE', 'auto')
made = []


@pytest.fixture
def event_loop():
    loop = pa.new_event_loop(engine=ENGINE if ENGINE != 'auto' else 'auto')
    made.append(loop)
    yield loop
    loop.close()


@pytest.mark.asyncio
async def test_runs_on_the_overriding_loop():
    loop = asyncio.get_running_loop()
    assert made and loop is made[-1]
    assert isinstance(loop, pa.Loop)


@pytest.mark.asyncio
async def test_datagrams_on_it():
    loop = asyncio.get_running_loop()
    assert loop is made[-1]
    got = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data[::-1], addr)

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.set_result(data)

    server, _ = await loop.create_datagram_endpoint(
        Echo, local_addr=('127.0.0.1', 0))
    client, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=server.get_extra_info('sockname'))
    client.sendto(b'datagram')
    assert await asyncio.wait_for(got, 10) == b'margatad'
    client.close()
    server.close()
