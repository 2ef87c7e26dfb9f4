"""Run every benchmark in ``bench/`` and print a table (``python -m bench``).

Each script runs garrison and its peer in the same run and prints one JSON line;
this runner starts each in a fresh interpreter, collects the lines, and prints the
figures and ratios side by side. ``--json`` prints the raw lines instead;
``--quick`` passes ``--quick`` to every script (a smoke run of a minute or two: smaller
counts, 20 kills instead of 1,000 in ``torture.py``; its figures are not the README's).
A peer that is not installed (DBOS, pykka) is named under its section, with what to
install, instead of leaving its figures at ``None`` unexplained.
``garrison bench`` runs the same.

- ``actors.py``: messages, ``call`` round trips, spawn+exit vs trio channels /
  ``start_soon`` and pykka ``tell`` / ``ask`` / start+stop;
- ``memory.py``: 100,000 idle processes (vs parked trio tasks), 10,000 waiting workflows;
- ``recovery.py``: 10,000 unfinished workflows resumed after a restart; journal
  records replayed per second;
- ``schedules.py``: the scheduler's idle CPU with 10,000 schedules, and the lateness of
  10,000 ticks due at the same second;
- ``scaling.py``: workflow steps/s at 1, 10, 100, 1,000 concurrent workflows
  (``synchronous`` NORMAL and FULL);
- ``workflow_steps.py``: 10-step workflows sequential and 100 concurrent, and a
  message round trip, vs DBOS on SQLite (WAL) and raw SQLite commits;
- ``workflow_steps_pg.py``: the same on PostgreSQL, vs DBOS on the same throwaway
  server and raw psycopg commits (``pg_driver.py`` and ``dbos_postgres.py`` measure
  the driver choices and DBOS alone);
- ``torture.py``: 1,000 SIGKILLs of a node running a ring of workflows, every result
  and effect checked; ``cluster_torture.py``: 60 SIGKILLs of random nodes of a 3-node
  cluster; ``cluster_bench.py``: cluster throughput, takeover time and cross-node round
  trips (the PostgreSQL ones start a throwaway server of their own).

``--runs N`` passes ``--runs N`` to the scripts that take it (each repeats itself N
times and reports ``[median, min, max]``). ``charts.py`` is not a benchmark: it draws
the PNG charts of the README from the ``--json`` lines.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: script -> the flat keys worth showing, with a label each
SHOW: dict[str, list[tuple[str, str]]] = {
    "actors.py": [
        ("garrison.msgs_per_s", "messages/s"),
        ("ratio_msgs_vs_trio_channel", "x trio channel"),
        ("ratio_msgs_vs_pykka_tell", "x pykka tell (>= 1)"),
        ("garrison.call_us", "call round trip us"),
        ("pykka.ask_us", "pykka ask us"),
        ("ratio_call_vs_pykka_ask", "x pykka ask (>= 3)"),
        ("garrison.spawn_exit_us", "spawn+exit us"),
        ("trio_raw.start_soon_us", "trio start_soon us"),
        ("ratio_spawn_vs_start_soon", "x trio start_soon (>= 0.5)"),
        ("garrison.spawn_outside_us", "node.spawn from outside us"),
        ("trio_raw.start_soon_10k_us", "trio start_soon (10k) us"),
        ("ratio_spawn_outside_vs_start_soon", "x trio start_soon, outside (>= 0.5)"),
    ],
    "memory.py": [
        ("n_processes", "idle processes"),
        ("idle_processes_mib", "their RSS MiB (100k: < 1024)"),
        ("bytes_per_idle_process", "bytes per idle process"),
        ("trio_raw.rss_bytes_per_task", "bytes per parked trio task"),
        ("kib_per_waiting_workflow", "KiB per waiting workflow"),
    ],
    "recovery.py": [
        ("recovery.workflows", "unfinished workflows"),
        ("recovery.open_node_s", "open_node returned s"),
        ("recovery.all_resumed_s", "all resumed (waiting) s (< 5)"),
        ("recovery.all_finished_s", "all finished s"),
        ("dbos.workflows", "DBOS-size recovery: workflows"),
        ("garrison_same_n_all_finished_s", "  all finished s"),
        ("dbos.all_finished_s", "  DBOS all finished s"),
        ("ratio_recovery_vs_dbos", "x DBOS recovery"),
        ("replay.journal_records", "journal records replayed"),
        ("replay.records_per_s", "replayed records/s (>= 100k)"),
    ],
    "schedules.py": [
        ("idle.with_schedules.schedules", "schedules loaded"),
        ("idle.with_schedules.open_node_s", "open_node with them s"),
        ("idle.no_schedules.idle_cpu_percent", "idle CPU %, no schedule"),
        ("idle.with_schedules.idle_cpu_percent", "idle CPU %, with them"),
        ("burst.schedules", "ticks due at one second"),
        ("burst.lateness_p50_ms", "start lateness p50 ms"),
        ("burst.lateness_p99_ms", "start lateness p99 ms"),
    ],
    "scaling.py": [
        ("normal_steps_per_s_at_1", "NORMAL steps/s, 1 at once"),
        ("normal_steps_per_s_at_10", "NORMAL steps/s, 10"),
        ("normal_steps_per_s_at_100", "NORMAL steps/s, 100"),
        ("normal_steps_per_s_at_1000", "NORMAL steps/s, 1000"),
        ("normal_1000_vs_100", "NORMAL 1000 / 100 (>= 1)"),
        ("normal.1000.gc_share", "NORMAL GC share of time, 1000"),
        ("full_steps_per_s_at_1", "FULL steps/s, 1 at once"),
        ("full_steps_per_s_at_10", "FULL steps/s, 10"),
        ("full_steps_per_s_at_100", "FULL steps/s, 100"),
        ("full_steps_per_s_at_1000", "FULL steps/s, 1000"),
        ("full_1000_vs_100", "FULL 1000 / 100 (>= 1)"),
        ("dbos_steps_per_s_at_1", "DBOS steps/s, 1 at once"),
        ("dbos_steps_per_s_at_100", "DBOS steps/s, 100"),
        ("dbos_steps_per_s_at_1000", "DBOS steps/s, 1000"),
    ],
    "workflow_steps.py": [
        ("garrison.seq_step_us_marginal", "NORMAL seq step us"),
        ("dbos.seq_step_us_marginal", "DBOS seq step us"),
        ("ratio_seq_step_vs_dbos", "x DBOS seq (>= 25)"),
        ("garrison.wf10_ms", "NORMAL 10-step workflow ms"),
        ("dbos.wf10_ms", "DBOS 10-step workflow ms"),
        ("ratio_wf10_vs_dbos", "x DBOS workflows in sequence (>= 30)"),
        ("garrison_full_sync.wf10_ms", "FULL 10-step workflow ms"),
        ("ratio_wf10_full_vs_dbos", "x DBOS sequence, FULL (>= 6)"),
        ("garrison.loop100_step_us", "NORMAL loop of 100 starts step us"),
        ("ratio_loop100_vs_dbos", "x DBOS loop of 100 (>= 60)"),
        ("garrison_full_sync.loop100_step_us", "FULL loop of 100 starts step us"),
        ("ratio_loop100_full_vs_dbos", "x DBOS loop of 100, FULL (>= 25)"),
        ("garrison.conc100_step_us", "NORMAL 100-conc step us"),
        ("dbos.conc100_step_us", "DBOS 100-conc step us"),
        ("ratio_conc100_step_vs_dbos", "x DBOS 100-conc (>= 50)"),
        ("garrison_full_sync.seq_step_us_marginal", "FULL seq step us"),
        ("sqlite.full_commit_us", "raw SQLite FULL commit us"),
        ("ratio_seq_step_full_vs_dbos", "x DBOS seq, FULL (>= 5)"),
        ("garrison_full_sync.conc100_step_us", "FULL 100-conc step us"),
        ("garrison_full_sync.conc100_commits_per_step", "FULL 100-conc commits/step"),
        ("ratio_conc100_step_full_vs_dbos", "x DBOS 100-conc, FULL (>= 25)"),
        ("garrison.msg_rt_us_p50", "message RT p50 us (< 1000)"),
        ("dbos.msg_rt_us_p50", "DBOS send/recv RT p50 us"),
        ("ratio_msg_rt_vs_dbos", "x DBOS message RT"),
    ],
    "workflow_steps_pg.py": [
        ("garrison.seq_step_us_marginal", "PG NORMAL seq step us"),
        ("garrison_full_sync.seq_step_us_marginal", "PG FULL seq step us"),
        ("dbos.seq_step_us_marginal", "DBOS PG seq step us"),
        ("ratios.seq_step_vs_dbos", "x DBOS seq (>= 8)"),
        ("garrison.conc100_nursery_step_us", "PG 100-conc (nursery) step us"),
        ("ratios.conc100_nursery_vs_dbos_threads", "x DBOS 100-conc threads (>= 30)"),
        ("garrison.conc100_loop_step_us", "PG 100-conc (loop) step us"),
        ("ratios.conc100_loop_vs_dbos_loop", "x DBOS 100-conc loop (>= 30)"),
        ("garrison.msg_rt_us_p50", "PG message RT p50 us (< 2000)"),
        ("garrison.msg_rt_us_p99", "PG message RT p99 us"),
        ("postgres.commit_sc_on_us_p50", "raw psycopg commit us"),
    ],
    "torture.py": [
        ("kills", "SIGKILLs"),
        ("runs", "node runs"),
        ("scenarios", "scenarios"),
        ("activities_run_again_after_a_kill", "activities run again after a kill"),
        ("all_checks_passed", "every check passed"),
        ("seconds", "seconds"),
    ],
    "cluster_torture.py": [
        ("kills", "SIGKILLs of random nodes"),
        ("workflows", "workflows"),
        ("takeover_max_s", "slowest takeover s"),
        ("ok", "every check passed"),
        ("seconds", "seconds"),
    ],
    "cluster_bench.py": [
        ("throughput.0.steps_per_s", "steps/s, 1 node"),
        ("throughput.1.steps_per_s", "steps/s, 2 nodes"),
        ("throughput.2.steps_per_s", "steps/s, 3 nodes"),
        ("takeover.0.takeover_s", "takeover after kill -9 s, lease 1s"),
        ("takeover.1.takeover_s", "takeover after kill -9 s, lease 2s"),
        ("round_trip.p50_ms", "cross-node workflow RT p50 ms"),
        ("round_trip.p99_ms", "cross-node workflow RT p99 ms"),
        ("plain_round_trip.p50_ms", "cross-node call RT p50 ms"),
        ("plain_round_trip.p99_ms", "cross-node call RT p99 ms"),
    ],
    "dbos_postgres.py": [
        ("dbos.seq_step_us_marginal", "DBOS PG seq step us"),
        ("dbos.wf10_ms", "DBOS PG 10-step workflow ms"),
        ("dbos.conc100_loop_step_us", "DBOS PG 100-conc loop step us"),
        ("dbos.conc100_threads_step_us", "DBOS PG 100-conc threads step us"),
        ("dbos.msg_rt_us_p50", "DBOS PG send/recv RT p50 us"),
        ("postgres.commit_us_p50", "raw psycopg commit us p50"),
        ("dbos_seq_step_in_commits", "DBOS seq step in commits"),
    ],
    "pg_driver.py": [
        ("floor.autocommit_insert_us.p50", "plain autocommit INSERT us p50"),
        ("floor.tx_pipeline_us.p50", "pipelined transaction us p50"),
        ("thread.commit_us.p50", "thread driver commit us p50"),
        ("trio.commit_us.p50", "trio driver commit us p50"),
        ("thread.notify_us.p50", "thread driver NOTIFY us p50"),
        ("trio.notify_us.p50", "trio driver NOTIFY us p50"),
        ("thread.msg_rt_us.p50", "thread driver message RT us p50"),
        ("trio.msg_rt_us.p50", "trio driver message RT us p50"),
        ("thread.conc100.commits_per_s", "thread driver 100-conc commits/s"),
        ("trio.conc100.commits_per_s", "trio driver 100-conc commits/s"),
        ("thread_hop_us.p50", "to_thread hop us p50"),
    ],
}


def flatten(data: dict[str, object], prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}, "c": [{"d": 2}]}`` as ``{"a.b": 1, "c.0.d": 2}``."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: the peers a script compares with: when one is missing the script says so in a string
#: under its key (``"dbos": "dbos is not installed (...)"``), printed under the section
PEERS = ("dbos", "pykka")


def missing_peers(result: dict[str, object]) -> list[str]:
    """The lines saying why a peer's figures are missing (``None`` in the table)."""
    return [f"{peer}: {result[peer]}" for peer in PEERS if isinstance(result.get(peer), str)]


def run_script(path: Path, quick: bool, runs: int = 1) -> dict[str, object]:
    args = [sys.executable, str(path)]
    text = path.read_text()
    if quick and "--quick" in text:
        args.append("--quick")
    if runs > 1 and "--runs" in text:
        args += ["--runs", str(runs)]
    done = subprocess.run(args, capture_output=True, text=True, cwd=HERE.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"bench": path.stem, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("only", nargs="*", help="script names to run (default: all)")
    args = parser.parse_args()
    if args.runs < 1:  # (0 or less ran each script once, as --runs 1)
        parser.error(f"--runs takes a whole number of at least 1, got {args.runs}")
    scripts = sorted(p for p in HERE.glob("*.py")
                     if not p.name.startswith("_") and p.name != "charts.py")
    if args.only:
        names = {n for p in scripts for n in (p.stem, p.name)}
        for name in args.only:  # (a typo ran nothing, exit 0)
            if name not in names:
                close = difflib.get_close_matches(name, [p.stem for p in scripts], 1)
                parser.error(f"no benchmark script {name!r}"
                             + (f" (did you mean {close[0]!r}?)" if close else "")
                             + "; the scripts: " + ", ".join(p.stem for p in scripts))
        scripts = [p for p in scripts if p.stem in args.only or p.name in args.only]
    if args.quick and not args.json:
        print("--quick: a smoke run (smaller counts); its figures are not the README's",
              flush=True)
    for path in scripts:
        started = time.monotonic()
        result = run_script(path, args.quick, args.runs)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(f"== {path.name} ({time.monotonic() - started:.0f} s)")
        if "error" in result:
            print(f"   failed: {result['error']}", flush=True)
            continue
        for line in missing_peers(result):
            print(f"   ({line})")
        flat = flatten(result)
        shown = SHOW.get(path.name) or [(k, k) for k, v in flat.items()
                                         if isinstance(v, int | float) and "ratio" in k]
        for key, label in shown:
            value = flat.get(key)
            text = f"{value:,.2f}" if isinstance(value, float) else str(value)
            print(f"   {label:<34} {text}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
