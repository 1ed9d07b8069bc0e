"""The demo's "migration": a oneshot job that prepares redis before the web app starts.

units/web.yaml requires this unit, and this unit requires redis, so activator starts redis,
waits for its READY=1, runs this to completion (exit 0), then starts the web instances.
"""

import time

import resp

# NX: keep the count if redis already has one (a rerun of the job must not reset it).
created = resp.command("SET", "hits", "0", "NX") == "OK"
resp.command("SET", "demo:migrated", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
print(f"migration done: hit counter {'created' if created else 'kept'} at {resp.command('GET', 'hits')}")
