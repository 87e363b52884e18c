# SPDX-License-Identifier: MIT
"""pact: a completion-based event loop (io_uring and epoll) for Python.

pact.asyncio is an asyncio event loop running on pact's C core.
"""
