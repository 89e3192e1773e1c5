#!/usr/bin/env python3
"""The server's own latency, as a bare client sees it: kept-alive HTTP/1.1
sockets, requests signed with botocore (which the AWS CLI brings) before
the clock starts, so that the client's own work stays out of the times.
Prints, as JSON, in milliseconds:

- put_ms, head_ms, get_ms: one socket, one request at a time; GET once as
  any client does and once re-arming TCP_QUICKACK before each read
  (get_quickack_ms: what a server that waits on the client's delayed ACK
  costs, and what it can do without it);
- put_concurrent_ms: the mean PUT time with <concurrency> sockets sending
  at once, each its own share of the objects (what the server does when
  as many requests as a migration sends are in flight on this machine);
- shaped_ms, shaped_concurrent_ms: the same two for the PUT a migration
  sends (If-None-Match: *, the file's SHA-1 as x-amz-checksum-sha1 and as
  metadata, a Content-Type, the payload unsigned), which asks the server
  for more: a look for an object already there, and a digest to check; at
  the keys a
  migration writes (upload/<owner>/<xx>/<yy>/<uuid>.jpg), which a server
  that keeps a file per object pays for in folders.

Every object has bytes of its own, as every file of a library does: a
server that stores a block once per content (Garage) would otherwise write
the data once and count references after that.

With a last argument `bound`, only the two series with <concurrency>
sockets at once, and the objects are left for the caller to drop with the
bucket: what a server does just then, measured beside a migration's
upload, since a server's speed drifts as it fills.

  bench/bare-client.py <endpoint> <bucket> <count> <size> <access> <secret> [concurrency [bound]]
"""
import base64
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ENDPOINT, BUCKET, COUNT, SIZE, ACCESS, SECRET = sys.argv[1:7]
COUNT, SIZE = int(COUNT), int(SIZE)
CONCURRENCY = int(sys.argv[7]) if len(sys.argv) > 7 else 5
BOUND_ONLY = len(sys.argv) > 8 and sys.argv[8] == "bound"
url = urlparse(ENDPOINT)
signer = SigV4Auth(Credentials(ACCESS, SECRET), "s3", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def connect():
    sock = socket.create_connection((url.hostname, url.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def signed(method, key, body=b"", shaped=False):
    """The bytes of one signed request; `shaped`, a PUT as a migration
    sends it."""
    path = f"/{BUCKET}/{key}"
    req = AWSRequest(method=method, url=f"{ENDPOINT}{path}", data=body)
    if shaped:
        req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        req.headers["If-None-Match"] = "*"
        sha1 = hashlib.sha1(body)
        req.headers["x-amz-checksum-sha1"] = base64.b64encode(sha1.digest()).decode()
        req.headers["Content-Type"] = "image/jpeg"
        req.headers["x-amz-meta-noodle-sha1"] = sha1.hexdigest()
    else:
        req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    signer.add_auth(req)
    headers = dict(req.headers)
    headers["Host"] = url.netloc
    headers["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return method, path, head.encode() + body


def receive(sock, quickack):
    # Linux drops out of quick-ACK mode on its own: re-arm before each read.
    if quickack:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    data = sock.recv(262144)
    if not data:
        sys.exit("the server closed the connection")
    return data


def send(sock, request, quickack=False):
    """One request on a kept-alive socket; returns the seconds it took."""
    method, path, raw = request
    started = time.perf_counter()
    sock.sendall(raw)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += receive(sock, quickack)
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
        rest += receive(sock, quickack)
    took = time.perf_counter() - started
    if status >= 300:
        sys.exit(f"{method} {path}: HTTP {status} {rest[:200]!r}")
    return took


def mean_ms(times):
    return round(1000 * sum(times) / len(times), 2)


def content(i):
    """The bytes of object i: its own, without paying for os.urandom each
    time."""
    return i.to_bytes(8, "little") + payload[8:]


def gallery_key(_):
    """A key as a migration writes an original: upload/<owner>/<xx>/<yy>/<uuid>.jpg."""
    asset = uuid.uuid4().hex
    return f"upload/{OWNER}/{asset[0:2]}/{asset[2:4]}/{uuid.UUID(asset)}.jpg"


def concurrent_puts(name, first, shaped=False):
    """COUNT PUTs over CONCURRENCY sockets at once, object `first + i`
    at key name(i): their times, and the keys written."""
    keys = [[name(i) for i in range(n, COUNT, CONCURRENCY)] for n in range(CONCURRENCY)]
    shares = [
        [signed("PUT", k, content(first + i), shaped) for i, k in zip(range(n, COUNT, CONCURRENCY), share)]
        for n, share in enumerate(keys)
    ]
    socks = [connect() for _ in shares]
    times = [[] for _ in shares]
    go = threading.Barrier(len(shares))

    def worker(n):
        go.wait()
        times[n] = [send(socks[n], r) for r in shares[n]]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(shares))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    return [t for share in times for t in share], [k for share in keys for k in share]


payload = os.urandom(SIZE)
OWNER = uuid.uuid4()
if BOUND_ONLY:
    put_concurrent, _ = concurrent_puts(lambda i: f"bare/c/{i:06d}", 0)
    shaped_concurrent, _ = concurrent_puts(gallery_key, COUNT, shaped=True)
    print(json.dumps({
        "concurrency": CONCURRENCY,
        "put_concurrent_ms": mean_ms(put_concurrent),
        "shaped_concurrent_ms": mean_ms(shaped_concurrent),
    }))
    sys.exit(0)
keys = [f"bare/{i:06d}" for i in range(COUNT)]
sock = connect()
send(sock, signed("PUT", "bare/warm-up", payload))
put = [send(sock, r) for r in [signed("PUT", k, content(i)) for i, k in enumerate(keys)]]
head = [send(sock, r) for r in [signed("HEAD", k) for k in keys]]
get = [send(sock, r) for r in [signed("GET", k) for k in keys]]
get_quickack = [send(sock, r, quickack=True) for r in [signed("GET", k) for k in keys]]
put_concurrent, concurrent_keys = concurrent_puts(lambda i: f"bare/c/{i:06d}", COUNT)
shaped_keys = [gallery_key(i) for i in range(COUNT)]
shaped = [send(sock, r) for r in [signed("PUT", k, content(2 * COUNT + i), shaped=True) for i, k in enumerate(shaped_keys)]]
shaped_concurrent, shaped_concurrent_keys = concurrent_puts(gallery_key, 3 * COUNT, shaped=True)
written = keys + concurrent_keys + shaped_keys + shaped_concurrent_keys + ["bare/warm-up"]
for r in [signed("DELETE", k) for k in written]:
    send(sock, r)
print(json.dumps({
    "put_ms": mean_ms(put),
    "head_ms": mean_ms(head),
    "get_ms": mean_ms(get),
    "get_quickack_ms": mean_ms(get_quickack),
    "concurrency": CONCURRENCY,
    "put_concurrent_ms": mean_ms(put_concurrent),
    "shaped_ms": mean_ms(shaped),
    "shaped_concurrent_ms": mean_ms(shaped_concurrent),
}))
