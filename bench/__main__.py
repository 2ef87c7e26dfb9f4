"""Run every benchmark in ``bench/`` and print a table (``python -m bench``).

Each script runs garrison and its peer in the same run and prints one JSON line;
this runner starts each in a fresh interpreter, collects the lines, and prints the
figures and ratios side by side. ``--json`` prints the raw lines instead;
``--quick`` passes ``--quick`` to the scripts that take it (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: script -> the flat keys worth showing, with a label each
SHOW: dict[str, list[tuple[str, str]]] = {
    "actors.py": [
        ("garrison.msgs_per_s", "messages/s"),
        ("ratio_msgs_vs_trio_channel", "x trio channel"),
        ("ratio_msgs_vs_pykka_tell", "x pykka tell"),
        ("garrison.call_us", "call round trip us"),
        ("ratio_call_vs_pykka_ask", "x pykka ask"),
        ("garrison.spawn_exit_us", "spawn+exit us"),
        ("ratio_spawn_vs_start_soon", "x trio start_soon"),
    ],
    "memory.py": [
        ("idle_processes_mib", "100k idle processes MiB"),
        ("garrison.rss_bytes_per_process", "bytes per idle process"),
    ],
}


def flatten(data: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_script(path: Path, quick: bool) -> dict[str, object]:
    args = [sys.executable, str(path)]
    if quick and "--quick" in path.read_text():
        args.append("--quick")
    done = subprocess.run(args, capture_output=True, text=True, cwd=HERE.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"bench": path.stem, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("only", nargs="*", help="script names to run (default: all)")
    args = parser.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only or p.name in args.only]
    for path in scripts:
        result = run_script(path, args.quick)
        if args.json:
            print(json.dumps(result))
            continue
        print(f"== {path.name}")
        if "error" in result:
            print(f"   failed: {result['error']}")
            continue
        flat = flatten(result)
        shown = SHOW.get(path.name) or [(k, k) for k, v in flat.items()
                                         if isinstance(v, int | float) and "ratio" in k]
        for key, label in shown:
            value = flat.get(key)
            text = f"{value:,.2f}" if isinstance(value, float) else str(value)
            print(f"   {label:<28} {text}")


if __name__ == "__main__":
    main()
