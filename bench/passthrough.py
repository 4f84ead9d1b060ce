"""The practical ceiling: a bare pass-through (raw ASGI on uvicorn + one aiohttp session), no auth,
no billing. Run: python bench/passthrough.py --port 8002 --upstream http://127.0.0.1:10000"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


def build(upstream: str, connections: int = 256) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(upstream, connector=aiohttp.TCPConnector(limit=connections))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert session is not None
        async with session.post(scope["path"], data=body, headers={"Content-Type": "application/json"}) as response:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(b"content-type", response.headers.get("Content-Type", "").encode())],
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--upstream", default="http://127.0.0.1:10000")
    parser.add_argument("--connections", type=int, default=256, help="upstream connections (0: no limit)")
    args = parser.parse_args()
    uvicorn.run(
        build(args.upstream, args.connections),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
