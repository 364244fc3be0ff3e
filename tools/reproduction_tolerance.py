"""How far the quick tables move between two runs that should give "the same result".

    python tools/reproduction_tolerance.py figures/quick figures/quick-avx2 figures/quick-seed1

Reads Tables 2-3 (``table2.md``, ``table3.md``) of every folder and compares each with the
first: per metric, the largest difference of a cell's mean over the draws, the configuration
and task where it occurs, and how many cells differ at all. The per-metric maximum over all the
comparisons is what ``tcl.pipeline.reproduction.TOLERANCE`` holds (docs/reproducing.md, "Comparing a
run with the committed tables", says which runs measured it). Prints a table and the dictionary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tcl.pipeline.reproduction import COMPARED_TABLES, EXACT_COLUMNS, cell_mean, parse_tables


def cells(folder: Path) -> dict[tuple[str, str, str], float]:
    text = "\n".join((folder / f"{name}.md").read_text() for name in COMPARED_TABLES)
    return {key: cell_mean(value) for key, value in parse_tables(text).items()}


def metric_key(label: str) -> str:
    return label.lower().replace(" ", "_").replace(".", "").replace("-", "_")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="figures folder of the reference run")
    parser.add_argument("others", type=Path, nargs="+", help="figures folders to compare")
    args = parser.parse_args(argv)
    reference = cells(args.reference)
    tolerance: dict[str, float] = {}
    for other_dir in args.others:
        other = cells(other_dir)
        print(f"\n{other_dir} against {args.reference}")
        by_metric: dict[str, list[tuple[float, str]]] = {}
        for key, value in reference.items():
            task, metric, column = key
            diff = abs(other.get(key, np.nan) - value)
            if column in EXACT_COLUMNS:
                if diff != 0:
                    print(f"  {column} differs ({task}, {metric}): it should not")
                continue
            by_metric.setdefault(metric_key(metric), []).append((diff, f"{column}, {task}"))
        for metric, diffs in by_metric.items():
            largest, where = max(diffs)
            changed = sum(d > 0 for d, _ in diffs)
            median = np.median([d for d, _ in diffs])
            print(
                f"  {metric:<18} max |diff| {largest:.4f} ({where}); median {median:.4f}; "
                f"{changed}/{len(diffs)} cells differ"
            )
            tolerance[metric] = max(tolerance.get(metric, 0.0), largest)
    print("\nTOLERANCE =", {k: round(v, 4) for k, v in tolerance.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
