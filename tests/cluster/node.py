"""A cluster node for the tests and benchmarks:

    python node.py URL NAME LEASE [--start N --prefix P --steps S --delay D] [--pong N]
                   [--stop-wait SECONDS]

Opens a node named NAME on the PostgreSQL store URL with lease LEASE (seconds),
optionally starts N ``steps`` workflows (ids P0 ..) and ``held(SECONDS)`` as ``h``
(``--held``), prints ``ready <epoch>`` and serves until SIGTERM (then drains: its
workflows move to the other nodes, and it exits once it has none) or SIGINT (closes).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster_app
import trio

import garrison


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("lease", type=float)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--prefix", default="w")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--pong", type=int, default=0, help="start pong(N) as 'pong'")
    parser.add_argument("--config", default=None, help="a config (services) to run")
    parser.add_argument("--echo", action="store_true", help="run cluster_app.echo")
    parser.add_argument("--max", type=int, default=None, help="the host's max_concurrent")
    parser.add_argument("--cluster-max", type=int, default=None,
                        help="the host's cluster_max_concurrent")
    parser.add_argument("--rate", default=None, help="the host's rate")
    parser.add_argument("--held", type=float, default=None,
                        help="start held(SECONDS) as 'h' (a step held in a worker thread)")
    parser.add_argument("--stop-wait", type=float, default=None,
                        help="the node's STOP_WAIT: how long its stop waits for a server "
                             "that does not answer (a test's shorter one)")
    args = parser.parse_args()
    if args.stop_wait is not None:
        from garrison import _node

        _node.STOP_WAIT = args.stop_wait
    os.environ["GARRISON_NODE"] = args.name
    async with garrison.open_node(config=args.config, store=args.url, name=args.name,
                                  lease=args.lease, max_concurrent=args.max,
                                  cluster_max_concurrent=args.cluster_max,
                                  rate=args.rate) as node:
        for i in range(args.start):
            await node.start_workflow(cluster_app.steps, args.steps, args.delay,
                                      id=f"{args.prefix}{i}")
        if args.held is not None:
            await node.start_workflow(cluster_app.held, args.held, id="h")
        if args.echo:
            await node.spawn(cluster_app.echo)
            while node.lookup("echo") is None:
                await trio.sleep(0.01)
        if args.pong:
            await node.start_workflow(cluster_app.pong, args.pong, id="pong")
        epoch = node.hosts["workflows"].ownership.epoch
        print(f"ready {epoch}", flush=True)
        async with trio.open_nursery() as nursery:

            async def drained() -> None:  # by SIGTERM, or by `garrison nodes drain`
                await node.drained()
                print("drained", flush=True)
                nursery.cancel_scope.cancel()

            nursery.start_soon(drained)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if signum == signal.SIGTERM:
                        node.drain()
                        continue
                    nursery.cancel_scope.cancel()


logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
trio.run(main)
