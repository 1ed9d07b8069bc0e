"""Flood a notify socket: `notify_fuzz_sender.py CORPUS SEED COUNT SOCKET FAKE_PIDS`.

Sends COUNT datagrams built from the hypothesis-generated messages in CORPUS (a JSON list of
hex strings) and from random bytes, deterministically from SEED:

- corpus messages as they are, or mutated (bytes flipped, a NUL inside, one or two NULs at
  the end), raw random bytes, oversized datagrams (more than 4096 bytes), exactly 4096 bytes;
- a quarter of them carry descriptors (SCM_RIGHTS) from a pool of pipes, a memfd, a socket
  and /dev/null, a few carry many (up to the kernel's 253 per message);
- some claim another pid in SCM_CREDENTIALS (root may): one of FAKE_PIDS (comma-separated),
  processes of units that are not allowed to notify.

Run inside activator's PID namespace (nsenter), so that its own pid means something there.
Blocking sends: the receiver's queue paces it. Prints what it sent, as JSON.
"""

import array
import json
import os
import random
import socket
import sys

corpus_path, seed, count, path, fake = sys.argv[1:6]
corpus = [bytes.fromhex(h) for h in json.load(open(corpus_path))]
rnd = random.Random(int(seed))
fake_pids = [int(p) for p in fake.split(",") if p]

r1, w1 = os.pipe()
pool = [r1, w1, os.memfd_create("fuzz"), os.open(os.devnull, os.O_RDWR), *socket.socketpair()]
pool = [fd if isinstance(fd, int) else fd.detach() for fd in pool]


def payload():
    roll = rnd.random()
    if roll < 0.45:
        return rnd.choice(corpus), "corpus"
    if roll < 0.65:
        data = bytearray(rnd.choice(corpus) or b"READY=1")
        how = rnd.randrange(4)
        if how == 0:
            for _ in range(rnd.randint(1, 4)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif how == 1:
            data.insert(rnd.randrange(len(data)), 0)
        elif how == 2:
            data += b"\0"
        else:
            data += b"\0\0"
        return bytes(data), "mutated"
    if roll < 0.87:
        return rnd.randbytes(rnd.randint(0, 600)), "random"
    if roll < 0.95:
        return (rnd.choice(corpus) + b"\n") * 5 + rnd.randbytes(rnd.randint(4097, 20000)), "oversized"
    if roll < 0.97:
        return b"STATUS=" + b"x" * (4096 - 7), "exactly-4096"
    lines = [b"%s=%d" % (rnd.choice([b"READY", b"STATUS", b"MAINPID", b"FDNAME", b"X"]), rnd.randrange(10**6))
             for _ in range(rnd.randint(10, 400))]
    return b"\n".join(lines)[:4096], "many-lines"


def ancillary(kinds):
    items = []
    roll = rnd.random()
    if roll < 0.02:
        fds = [rnd.choice(pool) for _ in range(rnd.randint(100, 253))]
        kinds["many-fds"] = kinds.get("many-fds", 0) + 1
    elif roll < 0.25:
        fds = [rnd.choice(pool) for _ in range(rnd.randint(1, 3))]
        kinds["fds"] = kinds.get("fds", 0) + 1
    else:
        fds = []
    if fds:
        items.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    if fake_pids and rnd.random() < 0.3:
        pid = rnd.choice(fake_pids)
        items.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS, array.array("i", [pid, 0, 0]).tobytes()))
        kinds["faked-pid"] = kinds.get("faked-pid", 0) + 1
    return items


kinds = {}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
sock.connect(path)
for _ in range(int(count)):
    data, kind = payload()
    kinds[kind] = kinds.get(kind, 0) + 1
    items = ancillary(kinds)
    try:
        sock.sendmsg([data], items)
    except OSError:  # a faked pid that is gone: send as ourselves, as libsystemd would
        sock.sendmsg([data], [item for item in items if item[1] != socket.SCM_CREDENTIALS])
print(json.dumps({"sent": int(count), "kinds": kinds, "pid": os.getpid()}))
