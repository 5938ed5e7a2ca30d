"""Kept for old commands: the pruning benchmark now lives in benchmarks/compare_pruning.py (any data set).

    python benchmarks/mahanews/compare_pruning.py [options]   ==   python benchmarks/compare_pruning.py --dataset mahanews [options]

The earlier version of this script (1-layer student, 480 rows, frozen embeddings) produced the MahaNews
table kept in docs/pruning-benchmark.md; it is in git history (commit d5d1f1f and before).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.compare_pruning import main  # noqa: E402

if __name__ == "__main__":
    main(["--dataset", "mahanews", *sys.argv[1:]])
