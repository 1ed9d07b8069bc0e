"""The `ready:` and `health:` keys of a unit file, read and checked (SPEC §10).

Like unitsockets.py, these functions work on the unit's reader (unitfile.py) and report
through it, so every problem reads FILE:LINE: unit NAME: ready...: message. Addresses are
checked as they will be used: expanded for instance 1 (an address naming `$(env.VAR)` not
set here is known only when the container runs, and is left to the probe).
"""

from __future__ import annotations

from activator import templates
from activator.probespec import (HEALTH_DEFAULTS, HEALTH_KINDS, READY_DEFAULTS, READY_KINDS,
                                 AddressError, Probe, parse_address, parse_url)
from activator.templates import TemplateError
from activator.unitkeys import Invalid, as_text, describe, parse_duration, split_command

MAX_READY_FD = 1023


def read_ready(reader, value, unit_type: str, sockets: list, accepts: bool) -> Probe | None:
    if value is None:
        return None
    path = ("ready",)
    if unit_type in ("notify", "oneshot"):
        why = ("it is ready when it sends READY=1" if unit_type == "notify" else
               "it is started once it exited 0")
        reader.error(path, f"ready: does not apply to type {unit_type} ({why}); use it with "
                     "simple or exec")
        return None
    if accepts:
        reader.error(path, "ready: a unit with an accept socket starts a process per connection; "
                     "there is nothing to wait for")
        return None
    if value == "listening":
        if not sockets:
            reader.error(path, "ready: listening needs a socket of this unit to listen on (it "
                         "has none); use ready: {tcp: HOST:PORT} for a program that binds its own")
            return None
        return Probe("listening", interval=READY_DEFAULTS["interval"])
    if not isinstance(value, dict):
        reader.error(path, f"ready: expected listening, or a mapping with one of tcp, http, "
                     f"exec, fd; got {describe(value, reader.doc.raw.get(path))}")
        return None
    probe = _read_form(reader, "ready", value, READY_KINDS[1:], READY_DEFAULTS)
    if probe is not None and probe.kind == "fd":
        last = 2 + len(sockets)
        if probe.fd <= last:
            taken = f"0-2 and its sockets 3-{last}" if sockets else "0-2"
            reader.error(path + ("fd",), f"ready.fd: {probe.fd} is taken (the service has {taken}); "
                         f"use {last + 1} or above")
            return None
    return probe


def read_health(reader, value, unit_type: str, accepts: bool) -> Probe | None:
    if value is None:
        return None
    path = ("health",)
    if unit_type == "oneshot" or accepts:
        what = "type oneshot" if unit_type == "oneshot" else "a unit with an accept socket"
        reader.error(path, f"health: does not apply to {what}, which has no long-running instance")
        return None
    if not isinstance(value, dict):
        reader.error(path, "health: expected a mapping with one of http, tcp, exec and interval, "
                     f"timeout, retries, start_period; got {describe(value, reader.doc.raw.get(path))}")
        return None
    return _read_form(reader, "health", value, HEALTH_KINDS, HEALTH_DEFAULTS)


def _read_form(reader, key: str, value: dict, kinds: tuple, defaults: dict) -> Probe | None:
    path = (key,)
    allowed = set(kinds) | set(defaults)
    errors = len(reader.problems)
    for name in value:
        if name not in allowed:
            reader.error(path + (name,), f"{key}: unknown key '{name}' (known: "
                         f"{', '.join(list(kinds) + list(defaults))})")
    forms = [k for k in kinds if k in value]
    if not forms and len(reader.problems) > errors:
        return None  # an unknown key was the form meant: said once
    if len(forms) != 1:
        got = f"got {', '.join(forms)}" if forms else "got none"
        reader.error(path, f"{key}: expected exactly one of {', '.join(kinds)}; {got}")
        return None
    kind = forms[0]
    fields = dict(defaults)
    for name in defaults:
        if name in value:
            fields[name] = _read_number(reader, key, name, value[name])
    if kind == "fd":
        for name in defaults:
            if name in value:
                reader.error(path + (name,), f"{key}.{name}: does not apply to fd (the service "
                             "writes when it is ready; timeout_start_sec bounds the wait)")
        target, fd = (), _read_fd(reader, key, value["fd"])
    else:
        target, fd = _read_target(reader, key, kind, value[kind]), 0
    if target is None or fd is None or len(reader.problems) > errors:
        return None
    return Probe(kind, target, fd, **fields)


def _read_number(reader, key: str, name: str, value):
    path = (key, name)
    raw = reader.doc.raw.get(path)
    try:
        if name == "retries":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Invalid(f"expected a whole number of at least 1, got {describe(value, raw)}")
            return value
        seconds = parse_duration(value, raw=raw)
        if seconds == 0 and name != "start_period":
            raise Invalid("must be more than 0")
        return seconds
    except Invalid as e:
        reader.error(path, f"{key}.{name}: {e}")
        return None


def _read_fd(reader, key: str, value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 3 <= value <= MAX_READY_FD:
        reader.error((key, "fd"), f"{key}.fd: expected a descriptor number from 3 to "
                     f"{MAX_READY_FD}, got {describe(value, reader.doc.raw.get((key, 'fd')))}")
        return None
    return value


def _read_target(reader, key: str, kind: str, value) -> tuple | None:
    path = (key, kind)
    try:
        if kind == "exec":
            args = value if isinstance(value, list) else split_command(as_text(value, None))
            args = [as_text(a, None) for a in args]
            if not args or not args[0]:
                raise Invalid("the command is empty")
        else:
            args = [as_text(value, reader.doc.raw.get(path))]
        parsed = tuple(templates.parse(a) for a in args)
    except (Invalid, TemplateError, ValueError) as e:
        reader.error(path, f"{key}.{kind}: {e}")
        return None
    for template in parsed:
        for ref in template.refs:
            if ref.kind == "socket":
                reader.error(path, f"{key}.{kind}: {ref} means nothing to a probe, which "
                             "receives no socket; name the address")
                return None
    if kind != "exec" and not any(r.kind == "env" and r.name not in reader.environ
                                  for r in parsed[0].refs):
        text = parsed[0].expand({}, 1, reader.environ)
        try:
            parse_address(text) if kind == "tcp" else parse_url(text)
        except AddressError as e:
            reader.error(path, f"{key}.{kind}: {e}")
            return None
    return parsed
