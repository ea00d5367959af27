"""A WebSocket peer whose receive buffer the kernel may never grow, for tests of what a server
holds for a client that does not read.

Node's net sockets cannot set SO_RCVBUF. Without it, Linux grows a receiver's buffer whenever
small segments overflow it (tcp_clamp_window, up to net.ipv4.tcp_rmem's maximum), so a peer
that stops reading keeps taking small writes long after it refused a large one. Setting the
size locks it.

    python3 window-peer.py PORT RCVBUF

Connects to 127.0.0.1:PORT, sends an upgrade request, reads the answer and never reads again.
stdout: 'open LOCALPORT' once the answer is a 101 (or 'refused ...'), then 'gone ERROR' once a
write fails (the server reset the connection). stdin: what to send, as frames of a 4-byte
big-endian length and that many bytes. Ends when stdin ends or a write fails.
"""

import base64
import os
import socket
import struct
import sys


def read_exact(stream, n):
    data = b''
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    port, rcvbuf = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect, so that the window scale offered in the SYN fits the buffer.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(('127.0.0.1', port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
            f'Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n'
        ).encode()
    )
    # One byte at a time: nothing past the answer's end may leave the kernel.
    answer = b''
    while not answer.endswith(b'\r\n\r\n'):
        byte = sock.recv(1)
        if not byte:
            break
        answer += byte
    status = answer.split(b'\r\n', 1)[0].decode('latin1')
    if ' 101 ' not in status + ' ':
        print(f'refused {status}', flush=True)
        return
    print(f'open {sock.getsockname()[1]}', flush=True)
    stdin = sys.stdin.buffer
    while True:
        head = read_exact(stdin, 4)
        if head is None:
            return
        data = read_exact(stdin, struct.unpack('>I', head)[0])
        if data is None:
            return
        try:
            sock.sendall(data)
        except OSError as err:
            print(f'gone {err.strerror or err}', flush=True)
            return


if __name__ == '__main__':
    main()
