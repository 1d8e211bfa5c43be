"""Where an intake delivery's time goes, without HTTP: the webhook path in-process, timed and profiled.

    /work/main/.venv/bin/python bench/profile_intake.py [--existing 100000] [--deliveries 2000] [--top 30]
        [--sort tottime|cumtime] [--no-profile]

Prepares the same database as bench_intake.py (the shipped CRM blueprint, demo users, existing
leads), then calls log_delivery + process_delivery — what POST /hooks/website_form runs in the
thread pool — for each delivery, first unprofiled (µs per delivery), then under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_intake import BLUEPRINT, TOKEN, form_payload, prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--existing", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--no-profile", action="store_true", help="time only (e.g. under py-spy, which cProfile would skew)")
    args = parser.parse_args()
    os.environ["CRM_WEBSITE_FORM_TOKEN"] = TOKEN

    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES
    from engine.engine import open_engine

    with tempfile.TemporaryDirectory() as workdir:
        db = Path(workdir) / "intake.db"
        _, phones = prepare(db, args.existing)
        runtime = open_engine(load_blueprint(BLUEPRINT, functions=FUNCTION_NAMES), f"sqlite:///{db}")
        rng = random.Random(5)
        headers = {"content-type": "application/json", "x-webhook-token": TOKEN}

        def deliveries(start: int, count: int) -> list[bytes]:
            return [json.dumps(form_payload(index, rng, phones[index] if index % 10 == 0
                                            else f"+86137{index:08d}"), ensure_ascii=False).encode()
                    for index in range(start, start + count)]

        def run(bodies: list[bytes]) -> float:
            started = time.process_time()
            for body in bodies:
                delivery_id = runtime.intake.log_delivery("website_form", headers, "", body)
                result = runtime.intake.process("website_form", delivery_id, headers, {}, body)
                assert result.status in (200, 201), result.body()
            return (time.process_time() - started) / len(bodies)

        run(deliveries(0, 200))  # warm caches
        plain = run(deliveries(200, args.deliveries))
        print(f"log_delivery + process_delivery: {plain * 1e6:,.0f} µs CPU per delivery "
              f"(≈ {1 / plain:,.0f} deliveries/s on one core, before HTTP)\n")
        if args.no_profile:
            runtime.close()
            return
        profile = cProfile.Profile()
        bodies = deliveries(200 + args.deliveries, args.deliveries)
        profile.enable()
        run(bodies)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue()[out.getvalue().find("   ncalls"):])
        runtime.close()


if __name__ == "__main__":
    main()
