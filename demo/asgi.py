"""The demo's ASGI app, served by uvicorn from units/api.yaml: which process answered, and the
same hit counter as the WSGI app (kept in redis).

uvicorn does not speak sd_notify, so the unit says `ready: listening`: an instance counts as
started once its uvicorn waits for connections on the socket, which activator reads from
/proc. The import below takes a moment, as a real application's does; until it is done,
`activator status` shows the instance `starting`. /healthz is what `health:` asks.
"""

import os
import time

import resp

time.sleep(float(os.environ.get("DEMO_IMPORT_SECONDS", "0.5")))  # a large application loading
INSTANCE = os.environ.get("ACTIVATOR_INSTANCE", "?")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        status, body = 200, b"ok\n"
    elif scope["path"] == "/":
        hits = resp.command("INCR", "hits")  # a short blocking call: fine for a demo
        body = f"hello from uvicorn pid {os.getpid()} (api instance {INSTANCE}): hit {hits}\n".encode()
        status = 200
    else:
        status, body = 404, b"not found\n"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
