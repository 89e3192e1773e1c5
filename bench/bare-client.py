#!/usr/bin/env python3
"""The server's own latency, as a bare client sees it: one kept-alive
HTTP/1.1 socket, one request at a time, signed with botocore (which
the AWS CLI brings). Prints the mean PUT, HEAD and GET times of small
objects in milliseconds, as JSON; GET twice, once as any client does and
once re-arming TCP_QUICKACK before each read (what a server that waits on
the client's delayed ACK costs, and what it can do without it).

  bench/bare-client.py <endpoint> <bucket> <count> <size> <access> <secret>
"""
import hashlib
import json
import os
import socket
import sys
import time
from urllib.parse import urlparse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ENDPOINT, BUCKET, COUNT, SIZE, ACCESS, SECRET = sys.argv[1:7]
COUNT, SIZE = int(COUNT), int(SIZE)
url = urlparse(ENDPOINT)
signer = SigV4Auth(Credentials(ACCESS, SECRET), "s3", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
sock = socket.create_connection((url.hostname, url.port or 80))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def receive(quickack):
    # Linux drops out of quick-ACK mode on its own: re-arm before each read.
    if quickack:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    data = sock.recv(262144)
    if not data:
        sys.exit("the server closed the connection")
    return data


def call(method, key, body=b"", quickack=False):
    """One request on the kept-alive socket; returns the seconds it took."""
    path = f"/{BUCKET}/{key}"
    req = AWSRequest(method=method, url=f"{ENDPOINT}{path}", data=body)
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    signer.add_auth(req)
    headers = dict(req.headers)
    headers["Host"] = url.netloc
    headers["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    started = time.perf_counter()
    sock.sendall(head.encode() + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += receive(quickack)
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if method == "HEAD":
        length = 0
    while len(rest) < length:
        rest += receive(quickack)
    took = time.perf_counter() - started
    if status >= 300:
        sys.exit(f"{method} {path}: HTTP {status} {rest[:200]!r}")
    return took


def mean_ms(times):
    return round(1000 * sum(times) / len(times), 2)


payload = os.urandom(SIZE)
keys = [f"bare/{i:06d}" for i in range(COUNT)]
call("PUT", "bare/warm-up", payload)
put = [call("PUT", k, payload) for k in keys]
head = [call("HEAD", k) for k in keys]
get = [call("GET", k) for k in keys]
get_quickack = [call("GET", k, quickack=True) for k in keys]
for k in keys + ["bare/warm-up"]:
    call("DELETE", k)
print(json.dumps({
    "put_ms": mean_ms(put),
    "head_ms": mean_ms(head),
    "get_ms": mean_ms(get),
    "get_quickack_ms": mean_ms(get_quickack),
}))
