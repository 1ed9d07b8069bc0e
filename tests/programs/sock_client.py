"""Connects at startup to another unit's socket: it must already be bound.

    sock_client.py OUT_FILE HOST:PORT|/unix/path [--wait-reply]

Connects once (no retry: a refused connection is the failure we look for), sends
"hello from PID\\n", shuts down its side, and with --wait-reply reads the answer until
end-of-file. Writes the outcome as JSON to OUT_FILE; exits 0 if it connected, 1 if not.
"""

import json
import os
import socket
import sys


def main() -> int:
    out, address = sys.argv[1], sys.argv[2]
    wait_reply = "--wait-reply" in sys.argv[3:]
    result = {"pid": os.getpid()}
    try:
        if address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(address)
        else:
            host, port = address.rsplit(":", 1)
            sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"hello from {os.getpid()}\n".encode())
        sock.shutdown(socket.SHUT_WR)
        if wait_reply:
            sock.settimeout(20)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            result["reply"] = data.decode(errors="replace")
        sock.close()
        result["connected"] = True
    except OSError as e:
        result["connected"] = False
        result["error"] = f"{type(e).__name__}: {e}"
    with open(out + ".tmp", "w") as f:
        json.dump(result, f)
    os.rename(out + ".tmp", out)
    return 0 if result["connected"] else 1


if __name__ == "__main__":
    sys.exit(main())
