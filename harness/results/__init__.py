"""Results on disk: `load_results(path_or_paths)` gives one pandas DataFrame (see docs/results.md)."""

from harness.results.load import load_results

__all__ = ["load_results"]
