"""What travels between the fork-server's processes, besides the harness's REQUEST/RESPONSE.

client -> server:  header JSON {"uid", "limits"} + one socket end (SCM_RIGHTS) per run
server -> child:   the same header + the client's socket end; the child reads the request from it
server -> client:  ANSWER_HEADER (length of the info JSON) + info JSON + the raw harness response
"""
from __future__ import annotations

import socket
import struct

ANSWER_HEADER = struct.Struct("!I")


def recv_all(sock: socket.socket, cap_bytes: int) -> bytes:
    """Everything `sock` sends until EOF; OSError past `cap_bytes`."""
    chunks, total = [], 0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap_bytes:
            raise OSError("sandbox answer too large")
        chunks.append(chunk)
