"""The benchmark tooling: repeated runs summarized, and the README's charts drawn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _runs  # noqa: E402


def test_runs_are_summarized_as_median_min_max_key_by_key() -> None:
    runs = [{"a": 1.0, "n": {"x": 10, "s": "w"}, "only_here": 1},
            {"a": 3.0, "n": {"x": 30, "s": "w"}},
            {"a": 2.0, "n": {"x": 20, "s": "w"}}]
    out = _runs.summary(runs)
    assert out == {"a": [2.0, 1.0, 3.0], "n": {"x": [20, 10.0, 30.0], "s": "w"}}
    assert _runs.summary(runs[:1])["a"] == 1.0
    assert _runs.median([2.0, 1.0, 3.0]) == 2.0 and _runs.median(5) == 5


def test_charts_are_drawn_from_the_bench_lines(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from bench import charts

    levels = {str(n): {"steps_per_s": [n * 100.0, n * 90.0, n * 110.0]} for n in (1, 10, 100)}
    lines = [
        {"bench": "scaling", "runs": 3, "levels": [1, 10, 100],
         "normal": levels, "full": levels, "dbos": {"1": {"steps_per_s": 700.0}}},
        {"bench": "workflow_steps", "ratio_wf10_vs_dbos": [31.0, 28.0, 35.0]},
        {"bench": "actors", "ratio_call_vs_pykka_ask": 4.2},
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    import matplotlib

    matplotlib.use("Agg")
    loaded = charts.load(results)
    scaling = charts.scaling_chart(loaded, tmp_path)
    ratios = charts.ratios_chart(loaded, tmp_path)
    for path in (scaling, ratios):
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert charts.ratios_chart({}, tmp_path) is None  # nothing measured: no chart


def test_every_benchmark_takes_quick_and_shows_rows() -> None:
    """``python -m bench --quick`` is a smoke run: every script takes ``--quick`` (the
    runner passed it only to scripts whose text held it, and torture.py's 1,000
    SIGKILLs ran in full), and every script's section shows figures (five printed a
    header only)."""
    from bench import __main__ as runner

    scripts = [p for p in (ROOT / "bench").glob("*.py")
               if not p.name.startswith("_") and p.name != "charts.py"]
    assert {p.name for p in scripts} == set(runner.SHOW)
    for path in scripts:
        assert '"--quick"' in path.read_text(), path.name


def test_the_table_says_why_a_peer_is_missing(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Without dbos every DBOS figure read ``None``, and nothing said why (the JSON did)."""
    from bench import __main__ as runner

    missing = "dbos is not installed (pip install -e '.[bench]')"
    monkeypatch.setattr(runner, "run_script", lambda path, quick, runs=1: {
        "bench": path.stem, "garrison": {"seq_step_us_marginal": 40.0}, "dbos": missing})
    monkeypatch.setattr(sys, "argv", ["bench", "--quick", "workflow_steps"])
    runner.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("--quick: a smoke run")
    assert out[1].startswith("== workflow_steps.py (")
    assert out[2] == f"   (dbos: {missing})"
    assert any(line.split() == ["DBOS", "seq", "step", "us", "None"] for line in out), out


def test_no_benchmark_leaves_its_stores_in_the_temp_folder() -> None:
    """Each script's stores live in a temporary folder removed when it is done: a full
    invocation left some thirty folders of 5-7 MB each in /tmp, a torture scenario its
    store and logs (a failed scenario keeps them, and says where)."""
    for path in [*(ROOT / "bench").glob("*.py"), ROOT / "tests" / "torture" / "run.py"]:
        text = path.read_text()
        assert "mkdtemp(" not in text or "rmtree(" in text, path.name


def test_a_script_name_no_benchmark_has_is_refused_naming_the_scripts() -> None:
    """nu463: ``garrison bench actor`` (``actors`` mistyped) ran nothing and exited 0,
    as a run of every script found, ``--runs 0`` ran each once, and its usage line read
    ``usage: __main__.py``. A name no script has is exit 2 naming it and the scripts
    there are, before anything runs, ``--runs`` below 1 too, and the usage names the
    command."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "bench", "actor", "--quick"], cwd=ROOT,
                          text=True, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr.startswith("usage: python -m bench"), done.stderr
    assert "no benchmark script 'actor' (did you mean 'actors'?); the scripts: " \
           "actors, cluster_bench," in done.stderr, done.stderr
    zero = subprocess.run([sys.executable, "-m", "bench", "--runs", "0", "actors"], cwd=ROOT,
                          text=True, capture_output=True, timeout=60)
    assert (zero.returncode, zero.stdout) == (2, ""), zero
    assert "--runs takes a whole number of at least 1, got 0" in zero.stderr, zero.stderr
    helped = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, text=True,
                            capture_output=True, timeout=60)
    assert helped.stdout.startswith("usage: python -m bench"), helped.stdout
