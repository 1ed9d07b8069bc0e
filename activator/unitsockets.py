"""The `sockets:` mapping of a unit file: each socket spec read and checked (SPEC §2).

The functions work on the unit's reader (unitfile.py), whose reporting they use, so that a
socket's problems read FILE:LINE: unit NAME: sockets.KEY...: message like every other key's.
"""

from __future__ import annotations

from activator.listen import ListenError
from activator.listen import parse as parse_listen
from activator.model import Socket
from activator.unitkeys import FDNAME, SOCKET_KEYS, describe, is_unit_name


def read_sockets(reader, value) -> list[Socket]:
    if value is None:
        return []  # `sockets:` with every entry commented out
    if not isinstance(value, dict):
        reader.error(("sockets",), "sockets: expected a mapping of socket names to socket specs, "
                   f"got {describe(value)}")
        return []
    result = []
    for key, spec in value.items():
        path = ("sockets", key)
        if not is_unit_name(key):
            reader.error(path, f"sockets: '{key}' is not a valid socket name (letters, digits, _ . @ -)")
            continue
        if isinstance(spec, (int, str)) and not isinstance(spec, bool):
            spec = {"listen": spec}  # `http: 8000` for `http: {listen: 8000}`
            reader.doc.lines[path + ("listen",)] = reader.doc.lines.get(path)
        if not isinstance(spec, dict):
            reader.error(path, f"sockets.{key}: expected a socket spec (a mapping with listen:), "
                       f"got {describe(spec)}")
            continue
        socket = read_socket(reader, key, spec, path)
        if socket:
            result.append(socket)
    return result

def read_socket(reader, key: str, spec: dict, path: tuple) -> Socket | None:
    errors_before = len(reader.problems)
    reader.unknown_keys(SOCKET_KEYS, spec, path, "socket")
    values = reader.convert_all(SOCKET_KEYS, spec, path)
    if "listen" not in spec:
        reader.error(path, f"sockets.{key}: missing key 'listen': the address to bind")
        return None
    try:
        listen = parse_listen(spec["listen"])
    except ListenError as e:
        reader.error(path + ("listen",), f"sockets.{key}.listen: {e}")
        return None
    name = values["name"] if values["name"] is not None else key
    if not FDNAME.match(name):
        reader.error(path + ("name",), f"sockets.{key}.name: '{name}' cannot be passed in "
                   "LISTEN_FDNAMES (1 to 255 printable characters, no ':' or blank)")
    kind = listen.kind
    if values["accept"] and not listen.is_stream:
        reader.error(path + ("accept",), f"sockets.{key}.accept: only stream sockets (tcp, unix) "
                   f"accept connections; {listen} is {kind}")
    # Options that do nothing for this kind of socket are ignored, as systemd does, with a
    # warning: a slip worth pointing out, not a reason to refuse the whole stack.
    useless = {}
    for option in ("nodelay", "keepalive"):
        if values[option] and kind != "tcp":
            useless[option] = "applies to tcp sockets only"
    if values["reuse_port"] and kind not in ("tcp", "udp", "inherit"):
        useless["reuse_port"] = "applies to tcp and udp sockets only"
    if values["ipv6_only"] and kind != "inherit" and not (listen.is_inet and (listen.is_ipv6 or not listen.host)):
        useless["ipv6_only"] = "applies to IPv6 addresses and bare ports only"
    for option in ("mode", "user", "group"):
        if option in spec and not listen.is_file:
            useless[option] = "applies to unix socket files and fifos only"
    if "max_connections" in spec and not values["accept"]:
        useless["max_connections"] = "applies with accept: true only"
    if kind == "inherit":
        for option in ("backlog", "reuse_port", "ipv6_only"):
            if option in spec:
                useless[option] = "an inherited socket is already bound"
    for option, reason in useless.items():
        reader.warn(path + (option,), f"sockets.{key}.{option}: {reason}; ignored")
    uid = gid = None
    if values["user"] is not None or values["group"] is not None:
        credentials = reader.read_credentials(values["user"], values["group"], path)
        if credentials:
            uid = credentials.uid if values["user"] is not None else None
            gid = credentials.gid
    if any(not p.warning for p in reader.problems[errors_before:]):
        return None
    return Socket(
        name=name, key=key, unit=reader.name, listen=listen, backlog=values["backlog"],
        reuse_port=values["reuse_port"], ipv6_only=values["ipv6_only"], nodelay=values["nodelay"],
        keepalive=values["keepalive"], mode=values["mode"], uid=uid, gid=gid,
        accept=values["accept"], max_connections=values["max_connections"],
        where=reader.where(path),
    )
