import asyncio
import resource

import pytest
from aiohttp import web, web_response

from kiln.common.serving import (
    ConnectionLimits,
    LimitedSite,
    raise_open_file_limit,
    replace_server_banner,
)


@pytest.mark.unit
def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        lower = min(soft, 256)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
        now = raise_open_file_limit()
        assert now == resource.getrlimit(resource.RLIMIT_NOFILE)[0] > lower
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.unit
def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ConnectionLimits(header_timeout=0)
    assert ConnectionLimits(3, 9).runner_options() == {"keepalive_timeout": 3}


@pytest.mark.integration
def test_a_limited_site_caps_connections_and_cuts_slow_heads() -> None:
    """In one process: an aiohttp app behind LimitedSite, with raw sockets as clients."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async def read_all(reader: asyncio.StreamReader) -> bytes:
        return await asyncio.wait_for(reader.read(), 5)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        limits = ConnectionLimits(header_timeout=0.5, max_connections=2)
        default_banner = web_response.SERVER_SOFTWARE
        replace_server_banner("test")
        runner = web.AppRunner(app, **limits.runner_options())
        await runner.setup()
        site = LimitedSite(runner, "127.0.0.1", 0, limits, name="test")
        await site.start()
        port = runner.addresses[0][1]
        try:
            slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            for _, writer in slow:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            await asyncio.sleep(0.1)
            assert site.open_connections == 2
            reader, _ = await asyncio.open_connection("127.0.0.1", port)
            refused = await read_all(reader)
            assert refused.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in refused
            # The slow ones are cut at the deadline; then a normal request is served.
            assert [await read_all(r) for r, _ in slow] == [b"", b""]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await read_all(reader)
            assert answer.startswith(b"HTTP/1.1 200") and b"Server: test\r\n" in answer
        finally:
            await runner.cleanup()
            replace_server_banner(default_banner)  # process-wide: leave it as found

    asyncio.run(scenario())
