# SPDX-License-Identifier: MIT
"""Makes pytest-asyncio's event_loop fixture give pact loops the way a
project would: pact's policy installed, the fixture asks the policy."""
import pact.asyncio

pact.asyncio.install()
