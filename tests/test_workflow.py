"""End to end: the small study runs, reruns nothing, and rebuilds exactly
what depends on a deleted intermediate, a changed hyperparameter or edited
package code; the ranking before training trains no candidate."""

import contextlib
import os

import pandas as pd
import pytest

from tests.workflow import ROOT, copy_project, make_project, planned_jobs, snakemake


@pytest.fixture(scope="module")
def project(small_study, tmp_path_factory):
  return copy_project(small_study, tmp_path_factory.mktemp("workflow") / "study")


def ALL_FIGURES_BUT(skip):
  """One job per figure of the small study, but those in `skip`."""
  return {f"figure{i}": 1 for i in range(1, 12) if f"figure{i}" not in skip}


ALL_JAX = {
    "train_base": 1,
    "train_base_lm": 1,
    "train_candidate": 2,
    "train_candidate_lm": 2,
    "train_scratch": 1,
}
BARRIERS = {
    "barrier_set_initial": 1,
    "barrier_set_initial_lm": 1,
    "barrier_set": 1,
    "barrier_set_lm": 1,
    "barrier_set_scratch": 1,
}
TABLES = {
    "metrics": 2,
    "scratch_metrics": 1,
    "ranking": 2,
    "correlations": 2,
    "correlation_summary": 1,
    "ranking_outcome": 2,
}
EVERYTHING_BUT_DATA = {
    **ALL_JAX,
    **BARRIERS,
    **TABLES,
    "proxies": 2,
    "table4": 1,
    "loss_curves": 1,
    **ALL_FIGURES_BUT(set()),
}


def test_tables_open_in_pandas(project):
  barriers = pd.read_parquet(project / "results" / "barriers" / "digits-mlp")
  assert {
      "setting",
      "model",
      "expansion",
      "group",
      "walk",
      "seed",
      "epoch",
      "node",
      "barrier",
      "resolution",
  } <= set(barriers)
  # seeds x (phi* and 2 candidates at epoch 0 + 2 candidates x 2 trained epochs) x walks x n
  assert len(barriers) == 2 * (3 + 2 * 2) * 2 * 60
  assert (barriers.barrier >= 0).all() and set(barriers.group) == {"hiddens_0"}
  assert set(barriers.walk) == {"paper", "nonidentity"}
  lm = pd.read_parquet(project / "results" / "metrics" / "wikitext-bert.parquet")
  assert set(lm.expansion) == {"f96", "f128"} and lm.val_acc.isna().all()
  assert set(lm.group) == {"ffn_0", "ffn_1", "heads_0"}  # every group of phi*
  assert set(lm[lm["first"]].group) == {"ffn_0"} and set(lm[lm.hidden].group) == {"ffn_0", "ffn_1"}
  assert (lm[lm.epoch == 0].gain == 0).all()
  assert lm[lm.epoch == 2].gain.gt(0).all()  # real training on real text helps
  scratch = pd.read_parquet(project / "results" / "scratch" / "wikitext-bert.parquet")
  assert (scratch[scratch.epoch == 1].M == 0).all()  # epoch 1 is the reference
  assert sorted(scratch.epoch.unique()) == [1, 2, 3]  # lm.scratch.epochs, not the base's 2
  m = pd.read_parquet(project / "results" / "metrics" / "digits-mlp.parquet")
  assert {
      "setting",
      "expansion",
      "seed",
      "epoch",
      "group",
      "walk",
      "q",
      "n",
      "lambda",
      "m",
      "M",
      "zero",
      "zero_base",
      "lambda_zero",
      "gain",
      "val_acc",
      "sotl_e",
      "gain_best",
  } <= set(m)
  assert len(m) == 2 * 2 * 3 * 2 * 4  # expansions x seeds x epochs x walks x (q, n)
  # Function-preserving expansion: no gain at t = 0, no SoTL-E before training.
  t0 = m[m.epoch == 0]
  assert (t0.gain == 0).all() and t0.sotl_e.isna().all()
  assert m[m.epoch > 0].sotl_e.lt(0).all()  # minus the training losses
  assert m.zero.between(0, 1).all() and (m.lambda_zero == (m["lambda"] == 0)).all()
  proxies = pd.read_parquet(project / "results" / "proxies" / "wikitext-bert.parquet")
  assert {"gradnorm", "snip", "grasp", "synflow", "jacov", "size", "width"} <= set(proxies)
  assert sorted(proxies[proxies.seed == 0].width) == [64, 96, 128]
  corr = pd.read_parquet(project / "results" / "correlations" / "wikitext-bert.parquet")
  assert {"size", "width", "synflow", "manifold", "manifold_all"} <= set(corr.metric)
  summary = pd.read_parquet(project / "results" / "tables" / "correlations_summary.parquet")
  assert {
      "mean",
      "std",
      "count",
      "seeds",
      "ci_low",
      "ci_high",
      "minus_size",
      "minus_size_low",
      "minus_size_high",
      "minus_width",
      "minus_width_low",
      "minus_width_high",
  } <= set(summary)
  ranking = pd.read_parquet(project / "results" / "rankings" / "digits-mlp.parquet")
  assert ranking["rank"].tolist() == [1, 2] and {"size", "width", "M0_all"} <= set(ranking)
  outcome = (project / "results" / "rankings" / "digits-mlp.outcome.md").read_text()
  assert "tau - tau(size)" in outcome and "tau - tau(width)" in outcome
  table4 = pd.read_parquet(project / "results" / "tables" / "table4.parquet")
  assert set(table4.setting) == {"digits-mlp", "wikitext-bert"} and "computation" in table4
  for f in (f"figure{i}" for i in range(1, 12)):
    for ext in ("png", "pdf"):
      assert (project / "results" / "figures" / f"{f}.{ext}").stat().st_size > 1000


def test_second_run_does_nothing(project):
  assert planned_jobs(project) == {}


def test_deleting_an_intermediate_reruns_only_its_dependants(project):
  path = project / "results/expanded/digits-mlp/x2/seed1.msgpack"
  data, stat = path.read_bytes(), path.stat()
  path.unlink()
  # The job that wrote it (every seed of x2), and what reads its training;
  # the ranking and the proxies expand phi* themselves.
  assert planned_jobs(project) == {
      "train_candidate": 1,
      "barrier_set": 1,
      "metrics": 1,
      "correlations": 1,
      "correlation_summary": 1,
      "ranking_outcome": 1,
      "loss_curves": 1,
      **ALL_FIGURES_BUT({"figure5", "figure8", "figure11"}),
  }
  # Put back as it was, mtime included, instead of rebuilding it: the other
  # tests of this module need the whole study.
  path.write_bytes(data)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert planned_jobs(project) == {}


def test_changing_a_metric_hyperparameter_reruns_only_the_tables(project):
  cfg = project / "config" / "config.yaml"
  text = cfg.read_text()
  cfg.write_text(text.replace("q: [0.2, 0.4]", "q: [0.1, 0.4]"))
  try:
    assert planned_jobs(project) == {
        "metrics": 2,
        "scratch_metrics": 1,
        "correlations": 2,
        "correlation_summary": 1,
        "ranking_outcome": 2,
        **ALL_FIGURES_BUT({"figure1"}),
    }
  finally:
    cfg.write_text(text)


@contextlib.contextmanager
def edited(module: str, old: str | None = None, new: str = ""):
  """The package's own module edited, restored afterwards: `old` replaced by
  `new`, or `new` appended. The package itself, as a user edits it: a copy
  elsewhere would also move the data that ships inside it, and with it every
  input path."""
  path = ROOT / "manifold_metric" / module
  original = path.read_text()
  assert old is None or old in original
  path.write_text(original.replace(old, new, 1) if old else original + f"\n{new}\n")
  try:
    yield
  finally:
    path.write_text(original)


# Each module's code edited (a new module-level name: code, not a comment),
# and the exact jobs that rerun: those whose script imports the module,
# directly or through the package, and what is built from their outputs.
MODULE_EDITS = {
    "study.py": {},  # config checks run when the Snakefile is read, in no job
    "barrier.py": {**BARRIERS, "loss_curves": 1, "table4": 1, **TABLES, **ALL_FIGURES_BUT(set())},
    "walks.py": {**BARRIERS, "loss_curves": 1, "table4": 1, **TABLES, **ALL_FIGURES_BUT(set())},
    "proxies.py": {
        "proxies": 2,
        "table4": 1,
        "ranking": 2,
        "correlations": 2,
        "correlation_summary": 1,
        "ranking_outcome": 2,
        **ALL_FIGURES_BUT({"figure1", "figure4", "figure10", "figure11"}),
    },
    "metric.py": {**TABLES, **ALL_FIGURES_BUT({"figure1"})},
    "correlation.py": {
        "correlations": 2,
        "correlation_summary": 1,
        "ranking_outcome": 2,
        **ALL_FIGURES_BUT(set()),
    },
    "ranking.py": {"ranking": 2, "ranking_outcome": 2},
    "timing.py": {"table4": 1},
    "plots.py": ALL_FIGURES_BUT(set()),
    "train.py": EVERYTHING_BUT_DATA,
}


@pytest.mark.parametrize("module", MODULE_EDITS)
def test_editing_package_code_reruns_exactly_what_it_can_change(project, module):
  with edited(module, new="_EDITED = 1"):
    assert planned_jobs(project) == MODULE_EDITS[module]
  assert planned_jobs(project) == {}


def test_comments_and_docstrings_rerun_nothing(project):
  with edited(
      "barrier.py",
      "def interpolate(va, vb, alpha):\n",
      "def interpolate(va, vb, alpha):  # a comment\n",
  ):
    with edited(
        "train.py",
        '"""The seed a candidate of study seed `seed` trains with."""',
        '"""The seed a candidate of study seed `seed` trains with (edited)."""',
    ):
      assert planned_jobs(project) == {}


def test_ranking_before_training_trains_no_candidate(tmp_path):
  p = make_project(tmp_path)
  target = "results/rankings/digits-mlp.md"
  assert planned_jobs(p, target) == {
      "prepare_dataset": 1,
      "train_base": 1,
      "barrier_set_initial": 1,
      "proxies": 1,
      "ranking": 1,
  }
  snakemake(p, target)
  assert not (p / "results" / "checkpoints").exists()
  md = (p / target).read_text()
  assert "ranked by the manifold metric" in md and "| x3" in md and "width" in md


def test_one_figure_builds_only_its_inputs(tmp_path):
  p = make_project(tmp_path)
  jobs = planned_jobs(p, "results/figures/figure1.png")
  assert jobs == {
      "prepare_dataset": 1,
      "train_base": 1,
      "train_candidate": 2,
      "loss_curves": 1,
      "figure1": 1,
  }
