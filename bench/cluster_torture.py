"""The long cluster torture: at least 50 SIGKILLs of random nodes of a 3-node cluster.

    python bench/cluster_torture.py [--kills 60] [--lease 1] [--quick]

``--quick`` (what ``python -m bench --quick`` passes): 5 kills of a cluster running 10
workflows of 300 steps, a smoke run of the same checks.

Starts a throwaway PostgreSQL server (tests/_postgres.py), three node processes
(tests/cluster/node.py) and workflows created by a tool; kills random nodes at random
moments and restarts them, until every workflow has finished; then checks exact
results and every step recorded exactly once, in order (tests/cluster/torture.py).
Prints ONE JSON line; exit 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))

import _postgres  # noqa: E402
from torture import CHECKS, torture  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=None, help="default 60 (--quick: 5)")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="5 kills, 10 workflows of 300 steps (a smoke run)")
    args = parser.parse_args()
    kills = args.kills if args.kills is not None else 5 if args.quick else 60
    workflows, steps, delay = (10, 300, 0.02) if args.quick else (30, 3000, 0.03)
    server = _postgres.start()
    try:
        url = _postgres.create_db(server, "cluster_torture")
        out = torture(url, kills=kills, workflows=workflows, steps=steps, delay=delay,
                      lease=args.lease, interval=1.0, seed=args.seed)
    finally:
        _postgres.stop(server)
    out["ok"] = all(out[c] for c in CHECKS)
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
