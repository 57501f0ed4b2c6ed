#!/usr/bin/env python3
"""The baseline a team would hand-write instead of natshook: a nats-py pull consumer,
HMAC-SHA256 signing of a JSON envelope, aiohttp POST, ack after a 2xx (NAK otherwise).

    python_bridge.py NATS_URL STREAM SUBJECT TARGET_URL SECRET COUNT [CONCURRENCY]

Exits after COUNT messages were acked. Used by benches/bridge.rs as the comparison.
"""
import asyncio, hashlib, hmac, json, sys, time

import aiohttp
import nats


async def main():
    url, stream, subject, target, secret, count = sys.argv[1:7]
    count = int(count)
    concurrency = int(sys.argv[7]) if len(sys.argv) > 7 else 64
    secret = secret.encode()
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable="python-bridge", stream=stream)
    acked = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def deliver(msg):
            meta = msg.metadata
            msg_id = f"{stream}-{meta.sequence.stream}"
            try:
                data = json.loads(msg.data)
            except ValueError:
                data = msg.data.decode("utf-8", "replace")
            body = json.dumps({
                "id": msg_id, "event": "bench", "timestamp": meta.timestamp.isoformat(),
                "data": data,
                "metadata": {"subject": msg.subject, "stream_sequence": meta.sequence.stream,
                             "attempt": meta.num_delivered, "version": "1"},
            }, separators=(",", ":")).encode()
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Webhook-Id": msg_id,
                "X-Webhook-Timestamp": ts,
                "X-Webhook-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
            }
            try:
                async with http.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except aiohttp.ClientError:
                ok = False
            if ok:
                await msg.ack()
                return 1
            await msg.nak()
            return 0

        while acked < count:
            try:
                msgs = await sub.fetch(batch=concurrency, timeout=5)
            except nats.errors.TimeoutError:
                continue
            acked += sum(await asyncio.gather(*(deliver(m) for m in msgs)))
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
