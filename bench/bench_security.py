"""Issue 13: hostile requests are refused at once while others keep being answered.

Serves the shipped CRM with `crm serve` in a process of its own (SQLite file, uvicorn on
loopback; the clients here do not share its interpreter lock) and measures, over real HTTP:
  1. a 1,000,000-tag lead (≈ 10 MB body) refused, while a GET of the lead list runs alongside;
  2. a 40,000-tag lead (≈ 350 KB, under the body cap) refused by the field's cap;
  3. the same concurrent GET alone, for comparison;
  4. one evaluation of each runaway expression from the issue.

    .venv/bin/python bench/bench_security.py [--rounds 20]

Prints milliseconds (median and worst of the rounds) for each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from argon2 import PasswordHasher

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.engine import open_engine  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.metamodel.errors import NOWHERE  # noqa: E402
from engine.metamodel.expressions import parse_expression  # noqa: E402
from engine.rules import FUNCTION_NAMES, FakeClock  # noqa: E402
from engine.rules.expressions import Evaluator, ExpressionError  # noqa: E402
from engine.runtime.ops.users import NewUser  # noqa: E402


@contextlib.contextmanager
def served(database: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CRM_SECRET_KEY": secrets.token_urlsafe(48)}
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", f"sqlite:///{database}",
                               "--port", str(port), "--no-worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{base}/api/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(30)


def _ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:.1f} ms, worst {max(samples) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    folder = Path(tempfile.mkdtemp())
    runtime = open_engine(load_blueprint(ROOT / "blueprints" / "crm", functions=FUNCTION_NAMES),
                          f"sqlite:///{folder / 'bench.sqlite'}",
                          password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    runtime.users.add(NewUser("wang", "Wang", "sales_rep", "east", password="crm-demo-wang"))
    token = runtime.users.create_token("wang")
    runtime.close()
    huge = json.dumps({"name": "x", "source": "website", "tags": [f"t{i}" for i in range(1_000_000)]}).encode()
    many = json.dumps({"name": "x", "source": "website", "tags": [f"t{i}" for i in range(40_000)]}).encode()
    print(f"bodies: 1M tags {len(huge) / 1e6:.1f} MB, 40k tags {len(many) / 1e3:.0f} KB")
    with served(folder / "bench.sqlite") as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}",
                                                   "Content-Type": "application/json"}, timeout=60)
        other_client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        for _ in range(3):
            api.get("/api/lead")
            other_client.get("/api/lead")
        refused, beside, alone, field_cap = [], [], [], []
        for _ in range(rounds):
            got: list[float] = []

            def reader() -> None:
                start = time.perf_counter()
                assert other_client.get("/api/lead").status_code == 200
                got.append(time.perf_counter() - start)
            other = threading.Thread(target=reader)
            start = time.perf_counter()
            other.start()
            status = api.post("/api/lead", content=huge).status_code
            refused.append(time.perf_counter() - start)
            other.join()
            beside.extend(got)
            assert status == 413, status
            start = time.perf_counter()
            assert api.post("/api/lead", content=many).status_code == 422
            field_cap.append(time.perf_counter() - start)
            start = time.perf_counter()
            other_client.get("/api/lead")
            alone.append(time.perf_counter() - start)
    print(f"1M-tag POST refused (413), client-measured incl. sending: {_ms(refused)}")
    print(f"GET /api/lead alongside it: {_ms(beside)}")
    print(f"GET /api/lead alone: {_ms(alone)}")
    print(f"40k-tag POST refused (422, field cap): {_ms(field_cap)}")
    evaluator = Evaluator(FakeClock())
    for source in ("(((999999**1000)**10)**10)**10", "'%0*d' % (999999999, 1)", "lower(['a'*100000]*100000)"):
        expression = parse_expression(source, NOWHERE)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            try:
                evaluator.evaluate(expression, {})
            except ExpressionError:
                pass
            times.append(time.perf_counter() - start)
        print(f"{source}: refused in {_ms(times)}")


if __name__ == "__main__":
    main()
