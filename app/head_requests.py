"""HEAD answered as GET without the body, for every GET route (RFC 9110 §9.3.2).

FastAPI routes answer only the methods they declare, so HEAD /health (what uptime checkers and load
balancers often send) got 405. Declaring HEAD on each route would also put it in the OpenAPI document;
this middleware answers it once for all, and stays out of it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
