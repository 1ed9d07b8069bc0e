"""An ASGI app that takes a while to import (PROBE_IMPORT_SECONDS), as a large application
does, then writes PROBE_MARKER_DIR/imported-PID: a service that does not speak sd_notify."""

import json
import os
import time

time.sleep(float(os.environ.get("PROBE_IMPORT_SECONDS", "1")))
if os.environ.get("PROBE_MARKER_DIR"):
    open(os.path.join(os.environ["PROBE_MARKER_DIR"], f"imported-{os.getpid()}"), "w").close()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"pid": os.getpid(), "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
