"""Bot reply latency: what the customer sees, from their message to the bot's answer on their channel.

    python bench/bot_reply.py [--quick] [--workers 1,2] [--db-url URL] [--redis-db 9] [--seconds S] [--rate R,...]

Runs the README's production shape on this machine: `scrm serve --no-worker` plus N `scrm worker` processes
on PostgreSQL + Redis (Redis db 9 by default, emptied). PostgreSQL is a cluster the bench starts itself
(initdb + pg_ctl as the `postgres` user, PostgreSQL's default settings: fsync, autovacuum, 128 MB of shared
buffers) and removes at the end: a CI machine's shared server may run with autovacuum off, which no operator
does in production and which a queue table does not survive (its dead rows only pile up, and every claim
walks them). --db-url measures another server instead (a scratch database there, created and dropped), with a
warning if its autovacuum is off; where initdb is not available the bench uses 127.0.0.1:5432. It talks to
them only as the outside world does, through processes and HTTP, so it measures any version of the follow-up
pipeline unchanged: `scrm migrate`, `scrm create-admin`, then the admin API creates an API-channel inbox
whose callback_url is a receiver in this process, sets round-the-clock business hours (a handoff goes to the
queue, not to the after-hours menu) and imports the FAQ knowledge bases (config/faq/shop_faq.yaml and
bench/data/en_shop).

An open-loop sender posts signed messages with Poisson arrivals at a fixed offered rate: FAQ questions
(paraphrases from the knowledge bases and bench/data), small talk (bench/data/en_shop's unrelated questions and
chit-chat) and handoff requests (bench/data/handoff.jsonl), 90% (--new-share) from returning customers: a pool
of contacts greeted beforehand, so each message gets one reply and no greeting; the pool is topped up before each
rate with as many greeted contacts as the rate may retire (unmeasured greetings), so a high rate is not
measured on brand-new customers only because the pool ran dry. The other 10% come from brand-new customers
(greeted and answered in one round; their first reply, the greeting, is what is timed), at every rate, and
their figures are printed apart. A contact has one message open at a time: a callback is matched to its
message by the recipient. A contact whose conversation may have left the bot (a handoff request, or an answer
offering an agent) is not used again.

    --rate 40,80 [--seconds S] [--pool N] [--workers N]: fixed rates instead of the search, each followed by the
    CPU milliseconds per message of the workers, the PostgreSQL backends of the bench's database, `scrm serve`
    and the bench's own process (its sender and callback receiver share the machine: 0.71 ms per message at
    360 msg/s, more than `scrm serve`), utime + stime from /proc from the rate's start until its backlog
    cleared, the reply p50 of the messages due in each second of the step (a rate beyond what the host
    sustains grows from the first second on; a slow spell of the host shows as a bump), and the events it logged.

For each offered rate: customer message -> first bot reply p50/p99, timed from when the message was due (a slow
acknowledgement counts). Rates double from 10 msg/s while p99 < 1 s and every reply came, then bisect. Counted:
lost (no reply within the drain timeout while the conversation is still with the bot), needs no answer (the
conversation was handed to agents: the bot does not talk over them), duplicates (one bot message delivered
twice, or a second reply to one customer message). Last, in the same run, the ack-path throughput: the same
sender in closed loop (64 connections, 500 contacts) as fast as the server acknowledges, --ack-repeats times
(the follow-up of one run worked off before the next), the best counting: a run that stalls would understate
the ack path and flatter the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

from _bot_reply_core import (  # noqa: E402
    Bench,
    BenchConfig,
    StepResult,
    cpu_ms,
    cpu_sample,
    event_summary,
    last_event,
    pct,
)
from _common import autovacuum_off, production_postgres, work_drained

SHARED_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"


async def search(bench: Bench, cfg: BenchConfig) -> tuple[float, list[StepResult]]:
    """Highest offered rate whose p99 stays under the target with every reply in: double from the low
    rate while it holds, then bisect between the last rate that held and the first that did not."""
    steps: list[StepResult] = []

    async def run(rate: float) -> bool:
        res = await bench.step(rate, cfg.seconds)
        steps.append(res)
        print(f"  {rate:7.1f} msg/s offered  {res.sent:5d} sent  p50 {res.p50_ms:8.1f} ms  p99 {res.p99_ms:8.1f} ms  "
              f"late {res.late:3d}  new customers {res.new_customers:3d}  no-answer-needed {res.no_answer:3d}  ack errors {res.ack_errors}"
              f"{'' if res.settled else '  (backlog did not clear)'}", flush=True)
        return res.ok(cfg.target_ms) and res.settled

    async def settled() -> bool:
        """An overloaded rate leaves a backlog: give it longer to clear before a lower rate is measured."""
        return steps[-1].settled or await bench.settle(cfg.drain_timeout * 4)

    good, bad = 0.0, None
    rate = cfg.low_rate
    while rate <= cfg.max_rate:
        if await run(rate):
            good = rate
            rate *= 2
        else:
            bad = rate
            break
    for _ in range(cfg.bisect):
        if bad is None or bad - good < max(1.0, good * 0.1) or not await settled():
            break
        mid = round((good + bad) / 2, 1)
        if await run(mid):
            good = mid
        else:
            bad = mid
    return good, steps


async def one_run(cfg: BenchConfig, workers: int, tmp: Path) -> dict[str, float | int | str]:
    print(f"\n{workers} scrm worker process(es); {cfg.describe()}", flush=True)
    async with Bench(cfg, workers, tmp) as bench:
        sustained, steps = await search(bench, cfg)
        final = await bench.finish(cfg.drain_timeout)
        acks = []
        for i in range(cfg.ack_repeats):
            if i:  # the replies to the last run's messages must not compete with the next one
                await work_drained(cfg.db_url, cfg.drain_timeout * 4)
            before, started = await cpu_sample(bench), time.perf_counter()
            acks.append(await bench.ack_rate(cfg.ack_messages))
            # What each process used meanwhile, in cores: the workers work off this run's follow-up during it
            # (niced, but their PostgreSQL backends are not), which slows the acknowledgements; shown so that a
            # low ack path, and so a high ratio, can be read for what it is.
            wall = time.perf_counter() - started
            acks[-1]["cores"] = {k: v / 1000 / wall for k, v in cpu_ms(before, await cpu_sample(bench)).items()}
    # Best of the runs: a run that stalls (this machine's neighbours, the server's checkpoint or autovacuum)
    # would understate the ack path and so flatter the ratio.
    ack = max(acks, key=lambda a: a["rate"])
    print("  ack path runs: " + ", ".join(f"{a['rate']:.0f} msg/s (p99 {a['p99_ms']:.0f} ms)" for a in acks), flush=True)
    print("  cores used during them (serve / workers / their PostgreSQL / all PostgreSQL / bench): " + ", ".join(
        " / ".join(f"{a['cores'][k]:.2f}" for k in ("serve", "worker", "worker_pg", "postgres", "bench")) for a in acks),
        flush=True)
    low = next((s for s in steps if s.rate == cfg.low_rate), None)
    best = next((s for s in steps if s.rate == sustained), None)
    print(f"  sustained {sustained:.1f} msg/s (p99 < {cfg.target_ms:.0f} ms)   ack path {ack['rate']:.0f} msg/s "
          f"(closed loop, p99 ack {ack['p99_ms']:.1f} ms, errors {ack['errors']})   ratio {sustained / ack['rate']:.3f}")
    for name, c in final["classes"].items():
        lat = c["latencies"]
        print(f"    {name:<10} sent {c['sent']:5d}  replied {c['replied']:5d}  needs no answer {c['no_answer']:4d}  "
              f"lost {c['lost']:3d}  extra replies {c['extra']:3d}  first reply p50 {pct(lat, 50):7.1f} ms  "
              f"p99 {pct(lat, 99):7.1f} ms")
    print(f"  lost {final['lost']}  duplicates {final['duplicates']} (redelivered {final['redelivered']}, second reply "
          f"to one message {final['extra']})  stray callbacks {final['stray']}")
    return {"sustained_rate": sustained, "ack_rate": ack["rate"], "ratio": sustained / ack["rate"],
            "p99_ms": best.p99_ms if best else float("nan"), "p50_low_ms": low.p50_ms if low else float("nan"),
            "lost": final["lost"], "duplicates": final["duplicates"], "workers": workers}


async def fixed_rates(cfg: BenchConfig, rates: list[float], tmp: Path, py_spy: str | None, workers: int = 1) -> None:
    """Each rate for --seconds after the warm-up: latency, and CPU per message of `scrm serve`, the workers
    and the PostgreSQL backends (utime + stime from /proc, from the step's start until its backlog cleared)."""
    print(f"\n{workers} scrm worker process(es); fixed rates {rates}; {cfg.describe()}", flush=True)
    async with Bench(cfg, workers, tmp) as bench:
        for rate in rates:
            spy = None
            if py_spy:
                import subprocess

                spy = subprocess.Popen(["py-spy", "record", "-p", str(bench.procs[1].pid), "-r", "200", "-f", "raw",
                                        "-o", f"{py_spy}-{rate:g}.txt", "-d", str(int(cfg.seconds + 2))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await bench.top_up(rate, cfg.seconds)
            first = await last_event(cfg.db_url)
            before = await cpu_sample(bench)
            res = await bench.step(rate, cfg.seconds)
            await bench.settle(cfg.drain_timeout)
            cpu = cpu_ms(before, await cpu_sample(bench))
            if spy is not None:
                spy.wait()
            per = {k: v / max(1, res.sent) for k, v in cpu.items()}
            print(f"CPU rate={rate:g} sent={res.sent} new_customers={res.new_customers} "
                  f"worker_ms={per['worker']:.2f} worker_pg_ms={per['worker_pg']:.2f} postgres_all_ms={per['postgres']:.2f} "
                  f"serve_ms={per['serve']:.2f} bench_ms={per['bench']:.2f} follow_up_ms={per['worker'] + per['worker_pg']:.2f} p50_ms={res.p50_ms:.1f} p99_ms={res.p99_ms:.1f} "
                  f"late={res.late}", flush=True)
            print("  p50 ms by second of the step: "
                  + " ".join("late" if math.isinf(v) else "-" if math.isnan(v) else f"{v:.0f}" for v in res.timeline),
                  flush=True)
        if not cfg.sqlite:
            print("  " + await event_summary(cfg.db_url, first), flush=True)


async def burst(cfg: BenchConfig, count: int, repeats: int, tmp: Path, py_spy: str | None = None) -> None:
    """CPU per message with the batching fixed: the worker is stopped (SIGSTOP) while `count` messages are
    acknowledged, then continued; CPU from then until every reply came. Independent of how busy the host
    is (a busy host makes batches longer at a fixed rate, which changes the CPU per message)."""
    import signal

    print(f"\n1 scrm worker process; bursts of {count} messages x {repeats}; {cfg.describe()}", flush=True)
    async with Bench(cfg, 1, tmp) as bench:
        worker = bench.procs[1]
        for _ in range(repeats):
            await bench.top_up(count / 2.0, 2.0, need=count + 20)  # every message of the burst waits at once
            first = await last_event(cfg.db_url)
            worker.send_signal(signal.SIGSTOP)
            try:
                res_task = asyncio.create_task(bench.step(count / 2.0, 2.0))  # sent in about 2 s
                while bench.sent and len([s for s in bench.sent if s.step == bench.steps]) < 1:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(2.2)
                await asyncio.gather(*list(bench.tasks), return_exceptions=True)
                before = await cpu_sample(bench)
            finally:
                worker.send_signal(signal.SIGCONT)
            spy = None
            if py_spy:  # the drain only: the worker's batch work on a backlog
                import subprocess

                spy = subprocess.Popen(["py-spy", "record", "-p", str(worker.pid), "-r", "200", "-f", "raw",
                                        "-o", f"{py_spy}-burst{bench.steps}.txt"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            res = await res_task
            await bench.settle(cfg.drain_timeout * 10)
            cpu = cpu_ms(before, await cpu_sample(bench))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
            per = {k: v / max(1, res.sent) for k, v in cpu.items()}
            print(f"CPU burst={res.sent} new_customers={res.new_customers} worker_ms={per['worker']:.2f} "
                  f"worker_pg_ms={per['worker_pg']:.2f} follow_up_ms={per['worker'] + per['worker_pg']:.2f} "
                  f"postgres_all_ms={per['postgres']:.2f} late={res.late}", flush=True)
            if not cfg.sqlite:
                print("  " + await event_summary(cfg.db_url, first), flush=True)


def line(r: dict[str, float | int | str]) -> str:
    return (f"sustained_ratio={r['ratio']:.3f} sustained_rate={r['sustained_rate']:.1f} ack_rate={r['ack_rate']:.0f} "
            f"p99_ms={r['p99_ms']:.1f} p50_low_ms={r['p50_low_ms']:.1f} workers={r['workers']} lost={r['lost']} "
            f"duplicates={r['duplicates']}")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per rate, two bisections, 1 worker (under a minute on an idle machine)")
    ap.add_argument("--workers", help="comma-separated worker counts, one full run each (default 1,2; --quick: 1)")
    ap.add_argument("--db-url", help="scratch database (PostgreSQL: created and dropped; default: a cluster of the "
                    "bench's own with PostgreSQL's default settings, autovacuum on, or 127.0.0.1:5432 where initdb "
                    "is not available); sqlite+aiosqlite:// runs the embedded worker inside `scrm serve` without Redis")
    ap.add_argument("--ack-repeats", type=int, default=3, help="closed-loop ack-path runs; the best counts")
    ap.add_argument("--ack-messages", type=int, help="messages per ack-path run (default 4000; --quick 1500)")
    ap.add_argument("--redis-host", default="127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=9, help="Redis db number (emptied; never 0)")
    ap.add_argument("--seconds", type=float, help="seconds per offered rate (default 15; --quick 3)")
    ap.add_argument("--max-rate", type=float, default=1280.0, help="highest offered rate the search tries")
    ap.add_argument("--worker-nice", type=int, help="set worker.nice (default: the product's, 10 above the bench: "
                    "on a host busy with other work the worker then gets little CPU)")
    ap.add_argument("--rate", help="comma-separated fixed offered rates instead of the search: prints CPU ms per "
                    "message of the workers (the first count of --workers, default 1), the PostgreSQL backends "
                    "and scrm serve for each")
    ap.add_argument("--burst", type=int, help="instead of the search: CPU ms per message of bursts of BURST messages "
                    "sent while the worker is stopped, then worked as a backlog (--repeat times)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pool", type=int, help="contacts greeted before the measured rates (default 600; --quick 60)")
    ap.add_argument("--new-share", type=float, default=0.1, help="share of messages from brand-new customers "
                    "(greeting + answer) at every rate; the rest from greeted contacts, topped up before each rate")
    ap.add_argument("--py-spy", help="with --rate or --burst: record the worker with py-spy into PREFIX-<rate>.txt")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.redis_db == 0:
        ap.error("--redis-db 0 is refused: the bench empties its Redis db")
    own = contextlib.nullcontext(None) if args.db_url else production_postgres()
    with own as server:
        db_url = args.db_url or f"{server or SHARED_SERVER}/scrm_bench_bot_reply"
        if not db_url.startswith("sqlite"):
            where = "a cluster of the bench's own (PostgreSQL's default settings)" if server else db_url
            print(f"PostgreSQL: {where}", flush=True)
            if await autovacuum_off(db_url):
                print("  warning: this server has autovacuum off: dead rows pile up in the event log and the hot "
                      "tables, so its figures are not those of a production server", flush=True)
        cfg = BenchConfig(db_url=db_url, redis_url=f"redis://{args.redis_host}/{args.redis_db}",
                          seconds=args.seconds or (3.0 if args.quick else 15.0), max_rate=args.max_rate,
                          bisect=2 if args.quick else 3, drain_timeout=6.0 if args.quick else 30.0,
                          ack_messages=args.ack_messages or (1500 if args.quick else 4000), ack_repeats=max(1, args.ack_repeats),
                          pool=args.pool or (60 if args.quick else 600),
                          warm_seconds=2.0 if args.quick else 5.0, worker_nice=args.worker_nice,
                          new_share=args.new_share)
        return await run(args, cfg)


async def run(args: argparse.Namespace, cfg: BenchConfig) -> int:
    workers = [int(w) for w in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    if cfg.embedded:
        workers = [0]
    if args.burst:
        with tempfile.TemporaryDirectory(prefix="bench_bot_reply_") as tmp:
            await burst(cfg, args.burst, args.repeat, Path(tmp), args.py_spy)
        return 0
    if args.rate:
        with tempfile.TemporaryDirectory(prefix="bench_bot_reply_") as tmp:
            await fixed_rates(cfg, [float(r) for r in args.rate.split(",")], Path(tmp), args.py_spy, workers[0])
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_bot_reply_") as tmp:
        for n in workers:
            results.append(await one_run(cfg, n, Path(tmp)))
    print()
    for r in results:
        print(f"  workers={r['workers']}: {line(r)}")
    head = next((r for r in results if r["workers"] == 1), results[0])
    print(f"BENCH bot_reply {line(head)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
