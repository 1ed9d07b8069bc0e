"""`/metrics`: the Prometheus text exposition format 0.0.4, built from the read-only view.

Each family has its HELP and TYPE lines; counters end in `_total`; label values are escaped
as the format says (backslash, double quote, newline). A family with no sample (no unit has
a health check, no `accept` socket) is left out whole.
"""

from __future__ import annotations


from activator import __version__
from activator.log import epoch_of
from activator.service import State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = [s.value for s in State]


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples) -> None:
        """samples: (labels dict, value) pairs; a family without any is not written."""
        samples = list(samples)
        if not samples:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
                self.lines.append(f"{name}{{{text}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _timestamp(rfc3339: str | None) -> float | None:
    if not rfc3339:
        return None
    return epoch_of(rfc3339)


def _instances(data: dict):
    for name, unit in data["units"].items():
        for instance in unit["instances"]:
            yield name, instance, {"unit": name, "instance": str(instance["instance"])}


def exposition(view, data: dict | None = None) -> str:
    """The whole page. `data` is view.status() when the caller already has it."""
    data = view.status() if data is None else data
    counters = view.counters
    out = Exposition()
    out.family("activator_build_info", "gauge", "activator's version; the value is always 1.",
               [({"version": __version__}, 1)])
    out.family("activator_generation", "gauge",
               "Models applied: 1 at boot, +1 for each reload whose unit files were valid.",
               [({}, data["generation"])])
    out.family("activator_reloads_total", "counter", "Reloads of the unit files, by result.",
               [({"result": result}, n) for result, n in counters.reloads.items()])
    out.family("activator_unit_state", "gauge", "1 for the unit's current state, 0 for the others.",
               [({"unit": name, "state": state}, int(unit["state"] == state))
                for name, unit in data["units"].items() for state in STATES])
    out.family("activator_unit_instances", "gauge", "Instances the unit runs (accept units: 0).",
               [({"unit": name}, len(unit["instances"])) for name, unit in data["units"].items()])
    out.family("activator_unit_restarts_total", "counter", "Restarts of the instance by its restart policy.",
               [(labels, instance["restarts"]) for _, instance, labels in _instances(data)])
    out.family("activator_unit_start_time_seconds", "gauge",
               "When the instance's current process started, in seconds since the epoch.",
               [(labels, _timestamp(instance["started"])) for _, instance, labels in _instances(data)
                if instance.get("started")])
    out.family("activator_unit_cpu_seconds_total", "counter",
               "CPU time of the instance's process and its descendants (user and system).",
               [(labels, instance["cpu_seconds"]) for _, instance, labels in _instances(data)
                if instance.get("cpu_seconds") is not None])
    out.family("activator_unit_memory_rss_bytes", "gauge",
               "Resident memory of the instance's process and its descendants.",
               [(labels, instance["rss_bytes"]) for _, instance, labels in _instances(data)
                if instance.get("rss_bytes") is not None])
    out.family("activator_unit_health", "gauge", "1 when the instance's health check passes, 0 when not.",
               [(labels, int(instance["health"] == "healthy")) for _, instance, labels in _instances(data)
                if instance.get("health") is not None])
    queues = view.socket_queues()
    out.family("activator_socket_queue_length", "gauge",
               "Connections waiting in the listening socket's accept queue, as the kernel reports it.",
               [({"socket": name}, length) for name, (length, _) in sorted(queues.items())])
    out.family("activator_socket_queue_limit", "gauge",
               "The accept queue's limit (the backlog), as the kernel reports it.",
               [({"socket": name}, limit) for name, (_, limit) in sorted(queues.items())])
    out.family("activator_socket_connections_total", "counter",
               "Connections accepted by activator on an accept socket (one process each).",
               [({"socket": name}, counters.connections.get(name, 0)) for name in sorted(view.accept_sockets())])
    out.family("activator_notify_messages_total", "counter",
               "sd_notify messages received, by whether notify_access admitted them.",
               [({"result": result}, n) for result, n in counters.notify_messages.items()])
    out.family("activator_watchdog_timeouts_total", "counter", "Watchdog timeouts (and WATCHDOG=trigger) per unit.",
               [({"unit": name}, counters.watchdog_timeouts.get(name, 0)) for name in data["units"]])
    return out.text()
