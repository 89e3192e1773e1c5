#!/usr/bin/env python3
"""A loopback TCP proxy that makes a server look remote: every request
waits DELAY seconds before it is passed on (a request being the bytes a
client sends after the server last answered on that connection), so each
S3 call costs one round trip more, as to a bucket 20 ms away. Connections
are independent: concurrency is untouched. With a delay of 0 it stands for
a server that answers at once: it acknowledges the upstream server's
segments immediately (TCP_QUICKACK) and forwards them without waiting
(TCP_NODELAY, as asyncio sets it), so no delayed ACK stalls either leg.

  bench/latency-proxy.py <listen-port> <upstream-host:port> <delay-seconds>
"""
import asyncio
import socket
import sys

LISTEN, UPSTREAM, DELAY = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
HOST, PORT = UPSTREAM.rsplit(":", 1)


async def pipe(reader, writer, on_chunk, quickack_on=None):
    try:
        while True:
            if quickack_on is not None:
                # Linux leaves quick-ACK mode on its own: re-arm it.
                quickack_on.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            data = await reader.read(65536)
            if not data:
                break
            await on_chunk()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection(HOST, int(PORT))
    except OSError:
        client_writer.close()
        return
    # True once the server has answered since the client last sent.
    state = {"answered": True}

    async def request_chunk():
        if state["answered"]:
            state["answered"] = False
            await asyncio.sleep(DELAY)

    async def answer_chunk():
        state["answered"] = True

    await asyncio.gather(
        pipe(client_reader, server_writer, request_chunk),
        pipe(server_reader, client_writer, answer_chunk, server_writer.get_extra_info("socket")),
    )


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
