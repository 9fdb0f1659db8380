"""The code hash of a workflow script covers exactly the package modules it
imports, directly or transitively."""

import shutil
from pathlib import Path

from manifold_metric import provenance

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"


def test_imports_are_read_from_the_source():
  assert provenance.imports(SCRIPTS / "metrics.py") == {"gain", "io", "metric"}
  assert "metric" in provenance.imports(ROOT / "manifold_metric" / "ranking.py")


def test_closure_follows_package_imports():
  train = provenance.closure(SCRIPTS / "train_base.py")
  assert {"train", "tracks", "models", "bert", "data", "text", "io", "archs"} <= set(train)
  # Training never depends on the metric, the figures or the correlations:
  # editing them must not retrain anything.
  assert not {"metric", "plots", "correlation", "ranking", "barrier"} & set(train)
  assert "plots" in provenance.closure(SCRIPTS / "figure_bars.py")
  assert "metric" in provenance.closure(SCRIPTS / "metrics.py")


def test_hash_changes_with_the_code_it_covers(tmp_path, monkeypatch):
  package = tmp_path / "manifold_metric"
  shutil.copytree(ROOT / "manifold_metric", package,
                  ignore=shutil.ignore_patterns("__pycache__", "bundled"))
  monkeypatch.setattr(provenance, "PACKAGE", package)
  before = {s.name: provenance.code_hash.__wrapped__(s) for s in SCRIPTS.glob("*.py")}
  with open(package / "metric.py", "a") as f:
    f.write("\n# an edit\n")
  after = {s.name: provenance.code_hash.__wrapped__(s) for s in SCRIPTS.glob("*.py")}
  changed = {s for s in before if before[s] != after[s]}
  assert changed == {s for s in before if "metric" in provenance.closure(SCRIPTS / s)}
  assert {"metrics.py", "scratch_metrics.py", "ranking.py"} <= changed
  assert not changed & {"train_base.py", "train_candidate.py", "barrier_set.py", "figure1.py"}
