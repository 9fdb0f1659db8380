"""The code hash of a workflow script covers exactly the package modules it
imports, directly or transitively, and only their code: not comments,
docstrings or layout."""

import shutil
from pathlib import Path

import pytest

from manifold_metric import provenance

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
TRAINING = ("train_base.py", "train_candidate.py", "train_scratch.py")


def test_imports_are_read_from_the_source():
  assert provenance.imports(SCRIPTS / "metrics.py") == {"gain", "metric", "tables"}
  assert "metric" in provenance.imports(ROOT / "manifold_metric" / "ranking.py")


@pytest.mark.parametrize("script", TRAINING)
def test_training_depends_on_no_score_and_no_config_check(script):
  train = provenance.closure(SCRIPTS / script)
  assert {"train", "tracks", "image_models", "bert", "data", "text", "archs"} <= set(train)
  # Editing the barrier engine, the walks, the proxies, the metric, the
  # figures, the correlations or the config checks must not retrain anything.
  assert not {
      "barrier",
      "barrier_tables",
      "walks",
      "probe",
      "proxies",
      "metric",
      "plots",
      "correlation",
      "ranking",
      "gain",
      "study",
      "timing",
  } & set(train)


def test_scores_depend_on_their_own_code_only():
  assert "proxies" not in provenance.closure(SCRIPTS / "barrier_set.py")
  assert not {"barrier", "walks"} & set(provenance.closure(SCRIPTS / "proxies.py"))
  assert "plots" in provenance.closure(SCRIPTS / "figure_bars.py")
  assert "metric" in provenance.closure(SCRIPTS / "metrics.py")
  for script in SCRIPTS.glob("*.py"):
    assert "study" not in provenance.closure(script), script.name


def _hashes(package: Path, monkeypatch) -> dict[str, str]:
  monkeypatch.setattr(provenance, "PACKAGE", package)
  return {s.name: provenance.code_hash.__wrapped__(s) for s in SCRIPTS.glob("*.py")}


@pytest.fixture
def package(tmp_path):
  package = tmp_path / "manifold_metric"
  shutil.copytree(
      ROOT / "manifold_metric", package, ignore=shutil.ignore_patterns("__pycache__", "bundled")
  )
  return package


def test_hash_changes_with_the_code_it_covers(package, monkeypatch):
  before = _hashes(package, monkeypatch)
  with open(package / "metric.py", "a") as f:
    f.write("\n_EDIT = 1\n")
  after = _hashes(package, monkeypatch)
  changed = {s for s in before if before[s] != after[s]}
  assert changed == {s for s in before if "metric" in provenance.closure(SCRIPTS / s)}
  assert {"metrics.py", "scratch_metrics.py", "ranking.py"} <= changed
  assert not changed & {"train_base.py", "train_candidate.py", "barrier_set.py", "figure1.py"}


def test_comments_docstrings_and_layout_change_no_hash(package, monkeypatch):
  before = _hashes(package, monkeypatch)
  path = package / "barrier.py"
  text = path.read_text()
  text = text.replace('"""Loss barriers', '"""Edited docstring. Loss barriers', 1)
  text = text.replace(
      "def interpolate(va, vb, alpha):\n", "def interpolate(va, vb, alpha):  # a new comment\n", 1
  )
  text = text.replace(
      "  return jax.tree.map(lambda a, b: alpha * a + (1 - alpha) * b, va, vb)",
      "  return jax.tree.map(\n      lambda a, b: alpha * a + (1 - alpha) * b, va, vb)",
      1,
  )
  path.write_text(text + "\n# a comment at the end\n")
  assert _hashes(package, monkeypatch) == before
  path.write_text(text.replace("alpha * a + (1 - alpha) * b", "alpha * a + (1.0 - alpha) * b"))
  assert _hashes(package, monkeypatch) != before  # a change of code is one
