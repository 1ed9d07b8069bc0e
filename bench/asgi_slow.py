"""The ASGI app uvicorn serves in reload.py's uvicorn approaches: a fixed 200, no work, but an
import that takes BENCH_IMPORT_SECONDS (default 1), as a large application's does."""

import os
import time

time.sleep(float(os.environ.get("BENCH_IMPORT_SECONDS", "1")))

BODY = b"ok\n"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
