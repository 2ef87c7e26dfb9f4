"""The long cluster torture: at least 50 SIGKILLs of random nodes of a 3-node cluster.

    python bench/cluster_torture.py [--kills 60] [--lease 1]

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
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    server = _postgres.start()
    try:
        url = _postgres.create_db(server, "cluster_torture")
        out = torture(url, kills=args.kills, workflows=30, steps=3000, delay=0.03,
                      lease=args.lease, interval=1.0, seed=args.seed)
    finally:
        _postgres.stop(server)
    out["ok"] = all(out[c] for c in CHECKS)
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
