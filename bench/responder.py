"""A tiny static server for the benchmarks; run with `python -S -I` so it starts in ~10 ms.

    responder.py http PORT   answer every connection with one fixed `200 OK`, then close
    responder.py echo PORT   echo each connection's bytes back until it shuts down its side

Single-threaded and blocking on purpose: it is the cheapest server Python can be, the service
in pid1.py and the "trivially fast server" that checks that the load client of sockets.py is
not itself the bottleneck. Only the standard library's socket module: no site, no imports.
"""

import socket
import sys

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\nok\n")


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1024)
    while True:
        conn, _ = server.accept()
        try:
            if mode == "http":
                conn.recv(65536)
                conn.sendall(RESPONSE)
            else:
                while data := conn.recv(65536):
                    conn.sendall(data)
        except OSError:
            pass
        conn.close()


main()
