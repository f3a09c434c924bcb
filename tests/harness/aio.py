"""Running asyncio code (aiortc, aioice) from a test in a trio-asyncio loop, as the server does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio_asyncio


def run_asyncio(main: Callable[[], Awaitable[None]]) -> None:
    """Run an asyncio coroutine function to its end in a fresh trio-asyncio loop."""

    async def in_loop() -> None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(main)()

    trio.run(in_loop)
