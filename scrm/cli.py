"""The `scrm` command: serve, worker, migrate, create-admin, demo, rotate-secrets, generate-secret-key."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import signal
import sys
from collections.abc import Sequence

from scrm.logs import setup_logging
from scrm.settings import Settings, SettingsError, load_settings

log = logging.getLogger("scrm.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scrm", description="scrm — self-hosted social CRM server")
    p.add_argument("--config", metavar="FILE", help="TOML file overriding config/scrm.toml")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the web server (with the outbox worker in the embedded default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-worker", action="store_true", help="do not run the outbox worker in this process")

    worker = sub.add_parser("worker", help="run an outbox worker process")
    worker.add_argument("--burst", action="store_true", help="deliver what is due now, then exit")
    worker.add_argument("--name", help="worker name in claims (default host:pid)")

    sub.add_parser("kf-pulls", help="pull WeCom 微信客服 messages (started by `scrm worker`)")
    sub.add_parser("migrate", help="apply database migrations")

    admin = sub.add_parser("create-admin", help="create an admin agent")
    admin.add_argument("--login", required=True)
    admin.add_argument("--password", help="(prompted when omitted; or SCRM_ADMIN_PASSWORD)")
    admin.add_argument("--name", help="display name")
    admin.add_argument("--role", default="admin", choices=["admin", "agent", "marketer"])

    sub.add_parser("rotate-secrets", help="re-encrypt every stored channel secret with the newest key "
                   "(the first of SCRM_SECRET_KEY)")
    sub.add_parser("generate-secret-key", help="print a new key for SCRM_SECRET_KEY")

    demo = sub.add_parser("demo", help="seed demo data (admin, API inbox, sample conversations) and serve")
    demo.add_argument("--no-serve", action="store_true", help="only seed, do not start the server")
    demo.add_argument("--port", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scrm` console script."""
    args = _parser().parse_args(argv)
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "host", None):
        overrides.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None):
        overrides.setdefault("server", {})["port"] = args.port
    if args.command == "demo":
        overrides.setdefault("server", {})["demo"] = True  # the customer simulator (memory channel)
    if getattr(args, "no_worker", False):
        overrides.setdefault("server", {})["run_worker"] = False
    try:
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as exc:
        print(f"scrm: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.logging.level, settings.logging.json_logs)
    _fast_event_loop(settings.server.uvloop)
    if args.command == "generate-secret-key":
        from scrm.secret_box import new_key

        print(new_key())
        return 0
    try:
        if args.command != "migrate":  # migrations never read a secret
            _check_secret_key(settings, demo=args.command == "demo")
    except SettingsError as exc:
        print(f"scrm: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "worker":
            return asyncio.run(run_worker(settings, burst=args.burst, name=args.name, config=args.config))
        if args.command == "kf-pulls":
            from scrm.kf_pull_process import run_kf_pulls

            _tune_gc()
            return asyncio.run(run_kf_pulls(settings))
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
        if args.command == "create-admin":
            password = args.password or os.environ.get("SCRM_ADMIN_PASSWORD") or getpass.getpass("password: ")
            return asyncio.run(create_admin(settings, args.login, password, args.name, args.role))
        if args.command == "rotate-secrets":
            return asyncio.run(rotate_secrets(settings))
        if args.command == "demo":
            from scrm.demo import seed_demo

            asyncio.run(migrate(settings))
            asyncio.run(seed_demo(settings))
            return 0 if args.no_serve else serve(settings)
    except KeyboardInterrupt:
        return 130
    except ConnectionRefusedError as exc:
        print(f"scrm: cannot connect to the database or Redis: {exc}", file=sys.stderr)
        return 1
    return 2


def _check_secret_key(settings: Settings, *, demo: bool) -> None:
    """Refuse to start without a key for channel secrets where one must be given (PostgreSQL).

    The demo keeps a generated key in var/ (next to its database, or in ./var on PostgreSQL), and the
    settings carry it from then on, so the server it starts uses the same key.
    """
    from pathlib import Path

    from pydantic import SecretStr

    from scrm import secret_box

    demo_dir = Path("var") if demo and not settings.database.url.startswith("sqlite") else None
    raw = secret_box.resolve_keys(settings, generate_in=demo_dir)
    secret_box.install(raw)
    settings.security.secret_key = SecretStr(raw)


async def rotate_secrets(settings: Settings) -> int:
    """Re-encrypt every stored secret with the newest key; then the older keys can be dropped."""
    from scrm.db.database import Database
    from scrm.db.reseal import reseal

    db = Database(settings.database.url, pool_size=2)
    try:
        count = await reseal(db, everything=True)
    finally:
        await db.dispose()
    print(f"re-encrypted the secrets of {count} rows with the newest key")
    return 0


# Connections the kernel queues for accept() (capped by net.core.somaxconn). aiohttp's default, 128, overflowed
# when a site's web chat sockets all reconnect at once (a network blip, a deploy): each connection dropped
# there waits for the client's SYN retry, a second or more, and bench/web_chat.py's 2,000 sockets took
# 6-10 s to reopen 200 at a time, while the server's own work per socket is about half a millisecond.
LISTEN_BACKLOG = 4096


def serve(settings: Settings) -> int:
    from aiohttp import web

    from scrm.web.app import create_app

    app = create_app(settings)
    _tune_gc()
    print(f"scrm listening on http://{settings.server.host}:{settings.server.port}", flush=True)
    web.run_app(app, host=settings.server.host, port=settings.server.port, print=None,
                shutdown_timeout=settings.server.shutdown_timeout, access_log=None, backlog=LISTEN_BACKLOG)
    return 0


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections in long-running processes.

    Every request allocates thousands of short-lived objects (ORM rows, parsed bodies); with the
    default gen-0 threshold of 700 the collector runs hundreds of times a second and its full passes
    walk the whole heap, which shows as p99 latency spikes under load. Objects from start-up (modules,
    mappers, compiled statements) are frozen so collections never walk them.

    A young-generation pass costs about 1-2 µs per young object on a large heap (each one's references
    are cache misses): at 50,000 objects one pass held `scrm serve`'s event loop for 50-120 ms, dozens of
    times a minute with 2,000 web chat sockets open (bench/web_chat.py, gc callbacks), every request
    in flight waiting behind it. At 10,000 the passes are five times shorter (at most ~15 ms) for the
    same total. The middle generation walks every object that survived a young pass since its own last
    pass: at 100 young passes that was up to a million objects (2,000 sockets reconnecting alone leave
    ~160,000), one pass holding the loop ~200 ms about once a minute under the web chat load. At 10 its
    passes walk at most ~100,000 (10-50 ms measured). The survivors reach the oldest generation sooner; its
    full passes (the whole unfrozen heap) still wait for 100 middle passes and for the objects promoted
    since the last one to reach a quarter of the old generation.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 100)


def _fast_event_loop(wanted: bool) -> None:
    """uvloop (libuv) instead of asyncio's pure-Python loop, where it is installed.

    Under load every database and Redis round trip waits for the loop to come round again; with
    asyncio's loop one round over 64 busy connections took a few milliseconds, several per batch.
    """
    if not wanted:
        return
    try:
        import uvloop
    except ImportError:  # not on this platform (Windows): the standard loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _lower_priority(increment: int) -> None:
    """Yield the CPU to `scrm serve` on a shared host (nice only matters when the CPU is contended)."""
    if increment <= 0 or not hasattr(os, "nice"):
        return
    try:
        os.nice(increment)
    except OSError as exc:
        log.warning("could not lower the worker's CPU priority: %s", exc)


async def migrate(settings: Settings) -> int:
    from scrm.db.migrate import upgrade

    await upgrade(settings.database.url)
    log.info("database is up to date")
    return 0


async def create_admin(settings: Settings, login: str, password: str, name: str | None, role: str) -> int:
    from scrm.bootstrap import build_context
    from scrm.db.migrate import upgrade
    from scrm.services.agents.accounts import AgentError, create_agent

    await upgrade(settings.database.url)
    ctx = await build_context(settings)
    try:
        async with ctx.db.transaction() as s:
            agent = await create_agent(s, login=login, password=password, role=role, display_name=name)
        print(f"created {role} {agent.login!r} (id {agent.id})")
        return 0
    except AgentError as exc:
        print(f"scrm: {exc}", file=sys.stderr)
        return 1
    finally:
        await ctx.close()


async def run_worker(settings: Settings, *, burst: bool = False, name: str | None = None,
                     config: str | None = None) -> int:
    """A standalone outbox worker; SIGTERM/SIGINT finish in-flight sends and release claims."""
    from scrm.bootstrap import build_context
    from scrm.delivery.worker import OutboxWorker
    from scrm.kf_pull_process import PullProcess, wanted
    from scrm.listeners import install_listeners, uninstall_listeners
    from scrm.services.wecom import kf_sync

    ctx = await build_context(settings)
    _tune_gc()
    pulls: PullProcess | None = None
    stop = asyncio.Event()
    fallback: list[asyncio.Task[None]] = []

    def pull_here() -> None:  # the pull runner process cannot be kept running: pull in this process
        kf_sync.pull_here(ctx)
        fallback.append(asyncio.create_task(kf_sync.run_runner(ctx, stop)))

    try:
        if not burst and settings.worker.wecom_pull_process and await wanted(ctx):
            pulls = PullProcess(config, pull_here)
            await pulls.start()  # before the priority is lowered: the child keeps the normal one
            kf_sync.pull_elsewhere(ctx)
        _lower_priority(settings.worker.nice)
        from scrm.db.reseal import seal_at_start

        await seal_at_start(ctx.db)
        worker = OutboxWorker(ctx, name=name)
        if burst:
            sent = await worker.run_until_idle(timeout=3600)
            await worker.shutdown()
            print(f"delivered {sent}")
            return 0
        unsubscribe = install_listeners(ctx)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from scrm.periodic import start_periodic

        periodic = start_periodic(ctx, stop)
        if pulls is None:  # 微信客服 pulls in this process (no pull runner process)
            periodic.append(asyncio.create_task(kf_sync.run_runner(ctx, stop)))
        log.info("worker %s running (Ctrl-C to stop)", worker.name)
        await worker.run(stop)
        if pulls is not None:
            await pulls.stop(settings.server.shutdown_timeout)
        periodic += fallback
        # Finish the bot and desk work in hand; what is left is taken over by another worker.
        await uninstall_listeners(unsubscribe, timeout=settings.server.shutdown_timeout)
        if periodic:
            await asyncio.wait(periodic, timeout=15)
        return 0
    finally:
        if pulls is not None and not pulls.stopping:
            await pulls.stop(5.0)
        await ctx.close()


if __name__ == "__main__":
    sys.exit(main())
