"""The benchmark harness: discovers `benchmarks/bench_*.py`, runs them and reports their figures.

Performance is measured here, never asserted in tests. Each benchmark module declares

    NAME = "<name>"
    def run(quick: bool = False) -> list[Figure]: ...

and measures its baselines in the same run (GNU tar, curl, raw sockets, official clients), so a
figure is always read beside the number it is compared with. `scripts/bench [NAME ...] [--json]
[--quick]` is the entry point; it runs `python -m benchmarks.harness` from the repository root.

The ratio of a figure is `value / baseline_value`. For figures where lower is better (times,
the default) a ratio below 1 means nbd beats its baseline; for figures declared
`higher_is_better=True` (throughputs) a ratio above 1 does. Whether a target is met is decided by
the benchmark itself (`met`), because only it knows what its target means.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Figure",
    "discover",
    "main",
    "median",
    "time_call",
    "time_command",
    "time_commands",
]

BENCH_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured number, optionally beside the baseline it is compared with.

    Attributes:
        name: What was measured, e.g. "nbctl list --output json (median)".
        value: The measured value, in `unit`.
        unit: "s", "ms", "MB/s", "files/s", ...
        baseline: What the value is compared with, e.g. 'python -c "import grpc"'.
        baseline_value: The baseline measured in the same run, in the same unit.
        target: The goal in words, e.g. "<= 2x baseline".
        met: Whether the target is met (None when there is no target).
        higher_is_better: True for throughputs; False (default) for times and sizes.
    """

    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    met: bool | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        """value / baseline_value, or None without a (non-zero) baseline."""
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value

    def to_json(self, benchmark: str) -> dict[str, Any]:
        return {
            "benchmark": benchmark,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "higher_is_better": self.higher_is_better,
        }


# --- measuring helpers shared by benchmarks -------------------------------------------------------


def median(samples: Iterable[float]) -> float:
    return statistics.median(list(samples))


def time_call(fn: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `runs` calls of fn, after `warmup` unmeasured calls."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def time_command(
    argv: Sequence[str],
    runs: int,
    *,
    warmup: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> list[float]:
    """Wall-clock seconds of `runs` executions of argv (start to exit); fails on a non-zero exit."""

    def once() -> None:
        done = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}"
            )

    return time_call(once, runs, warmup)


def time_commands(
    commands: Mapping[str, Sequence[str]],
    runs: int,
    *,
    warmup: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds of each command, run round-robin (one of each per round) so that a
    change of machine load during the measurement weighs on every command alike."""
    for argv in commands.values():
        time_command(argv, 0, warmup=warmup, env=env, cwd=cwd)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            samples[name] += time_command(argv, 1, warmup=0, env=env, cwd=cwd)
    return samples


# --- discovery and reporting ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    run: Callable[[bool], list[Figure]]


def discover(bench_dir: Path = BENCH_DIR, broken: dict[str, str] | None = None) -> dict[str, Benchmark]:
    """Imports every benchmarks/bench_*.py and returns them by NAME.

    A module that fails to import is left out and, when `broken` is given, recorded there (by its
    file's name without "bench_") with the traceback, so one broken benchmark never stops the others.
    """
    found: dict[str, Benchmark] = {}
    for path in sorted(bench_dir.glob("bench_*.py")):
        module_name = f"benchmarks.{path.stem}"
        try:
            module = importlib.import_module(module_name)
            run = module.run
        except Exception:
            if broken is not None:
                broken[path.stem.removeprefix("bench_")] = traceback.format_exc()
            continue
        name = getattr(module, "NAME", path.stem.removeprefix("bench_"))
        found[name] = Benchmark(name=name, module=module_name, run=run)
    return found


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _print_table(results: list[tuple[str, Figure]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nbd benchmarks")
    for column in (
        "benchmark",
        "figure",
        "value",
        "unit",
        "baseline",
        "baseline value",
        "ratio",
        "target",
        "met",
    ):
        table.add_column(
            column, justify="right" if column in ("value", "baseline value", "ratio") else "left"
        )
    for bench, fig in results:
        met = "" if fig.met is None else ("yes" if fig.met else "NO")
        table.add_row(
            bench,
            fig.name,
            _fmt(fig.value),
            fig.unit,
            fig.baseline or "",
            _fmt(fig.baseline_value),
            _fmt(fig.ratio),
            fig.target or "",
            met,
        )
    console = Console()
    if not console.is_terminal:
        # Piped or logged output: do not squeeze the table into 80 columns.
        console = Console(width=200)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description="Run nbd's benchmarks.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per figure")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller inputs")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    broken: dict[str, str] = {}
    benchmarks = discover(broken=broken)
    if args.list:
        for name, bench in benchmarks.items():
            print(f"{name}\t{bench.module}")
        for name in broken:
            print(f"{name}\t(fails to import)")
        return 0
    unknown = [n for n in args.names if n not in benchmarks and n not in broken]
    if unknown:
        print(
            f"bench: unknown benchmark {', '.join(unknown)}; known: {', '.join([*benchmarks, *broken]) or 'none'}",
            file=sys.stderr,
        )
        return 2
    failed = False
    for name, error in broken.items():
        if not args.names or name in args.names:
            failed = True
            print(f"bench: {name} cannot be imported:\n{error}", file=sys.stderr)
    selected = [benchmarks[n] for n in (args.names or list(benchmarks)) if n in benchmarks]

    results: list[tuple[str, Figure]] = []
    for bench in selected:
        try:
            figures = bench.run(args.quick)
        except Exception:  # a failing benchmark is reported; the others still run
            failed = True
            print(f"bench: {bench.name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        for fig in figures:
            results.append((bench.name, fig))
            if args.json:
                print(json.dumps(fig.to_json(bench.name)), flush=True)
    if not args.json:
        _print_table(results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
