"""The long crash-and-fault torture: at least 1,000 SIGKILLs across scenarios.

    python bench/torture.py [--kills 1000] [--quick]

``--quick`` (what ``python -m bench --quick`` passes): 20 kills of the same scenarios
with a quarter of their rounds, every check made: a smoke run of seconds, not minutes.

A node runs a ring of workflows that pass tokens to each other, call a plain process
every round and record each step as an activity (tests/torture/). The node is killed
with SIGKILL at random moments and restarted until every workflow finishes, then the
store is checked: exact results, every activity recorded once, every message delivered
once, nothing left in an inbox. Scenarios differ in ring size, rounds and durability.
Prints ONE JSON line (per scenario kind and in total); exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "torture"))

import run as torture_run  # noqa: E402

#: (ring size, rounds, synchronous, share of the kills)
SCENARIOS = [(20, 40, "normal", 0.4), (50, 20, "normal", 0.3), (10, 60, "full", 0.2),
             (100, 5, "normal", 0.1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=None, help="default 1000 (--quick: 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="20 kills, a quarter of the rounds (a smoke run)")
    args = parser.parse_args()
    if args.kills is None:
        args.kills = 20 if args.quick else 1000
    parts = []
    for i, (size, rounds, sync, share) in enumerate(SCENARIOS):
        if args.quick:
            rounds = max(5, rounds // 4)
        parts.append(torture_run.torture(max(1, round(args.kills * share)), size, rounds,
                                         args.seed + 1000 * i, sync))
    ok = all(p[c] for p in parts for c in torture_run.CHECKS)
    out = {"kills": sum(int(p["kills"]) for p in parts),  # type: ignore[call-overload]
           "runs": sum(int(p["runs"]) for p in parts),  # type: ignore[call-overload]
           "scenarios": sum(int(p["scenarios"]) for p in parts),  # type: ignore[call-overload]
           "seconds": round(sum(float(p["seconds"]) for p in parts), 1),  # type: ignore[arg-type]
           "activities_run_again_after_a_kill": sum(
               int(p["activities_run_again_after_a_kill"]) for p in parts),  # type: ignore[call-overload]
           "all_checks_passed": ok, "by_scenario": parts}
    print(json.dumps(out))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
