"""Why the outbox sends with aiohttp: HTTP clients side by side against the timers benchmark's receiver.

    /work/main/.venv/bin/python bench/bench_http_clients.py [--requests 3000]

Each client POSTs the same small JSON body `--requests` times to the local Slack-like receiver
of bench_timers.py (its own process, 127.0.0.1), sequentially or with 8 requests in flight.
Reported: requests/s and the client process's CPU per request. The worker's deliverer needs
to send >= 1,000 messages/s besides firing the timers on the same core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_timers import _receiver  # noqa: E402

BODY = json.dumps({"text": "Lead 王伟 breached its SLA (30 min), owner Wang Wei"}).encode()
HEADERS = {"Content-Type": "application/json"}


def httpx_sequential(url: str, n: int) -> None:
    import httpx
    with httpx.Client() as client:
        for _ in range(n):
            client.post(url, content=BODY, headers=HEADERS)


def httpx_threads(url: str, n: int) -> None:
    import httpx
    with httpx.Client() as client, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.post(url, content=BODY, headers=HEADERS), range(n)))


def httpx_async(url: str, n: int) -> None:
    import httpx

    async def main() -> None:
        slots = asyncio.Semaphore(8)
        async with httpx.AsyncClient() as client:
            async def one() -> None:
                async with slots:
                    await client.post(url, content=BODY, headers=HEADERS)
            await asyncio.gather(*(one() for _ in range(n)))
    asyncio.run(main())


def aiohttp_in_flight(url: str, n: int) -> None:
    from engine.channels import ChannelKind, PreparedRequest, deliver_all
    request = PreparedRequest(ChannelKind.SLACK, url, tuple(HEADERS.items()), BODY)
    deliver_all([request] * n, concurrency=8)  # what the worker runs


CLIENTS: dict[str, Callable[[str, int], None]] = {
    "httpx.Client, sequential": httpx_sequential,
    "httpx.Client, 8 threads": httpx_threads,
    "httpx.AsyncClient, 8 in flight": httpx_async,
    "aiohttp via deliver_all, 8 in flight (the worker)": aiohttp_in_flight,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    process, url, received = _receiver()
    try:
        print("| client | requests/s | client CPU per request |\n|---|---:|---:|")
        for name, run in CLIENTS.items():
            before, started, cpu = received[0], time.perf_counter(), time.process_time()
            run(url, args.requests)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert received[0] - before == args.requests, "the receiver did not get every request"
            print(f"| {name} | {args.requests / seconds:,.0f} | {cpu / args.requests * 1000:.2f} ms |", flush=True)
    finally:
        process.terminate()


if __name__ == "__main__":
    main()
