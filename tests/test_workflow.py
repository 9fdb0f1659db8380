"""End to end: the small study runs, reruns nothing, and rebuilds exactly
what depends on a deleted intermediate, a changed hyperparameter or edited
package code; the ranking before training trains no candidate."""

import contextlib

import pandas as pd
import pytest

from tests.workflow import ROOT, copy_project, make_project, planned_jobs, snakemake


@pytest.fixture(scope="module")
def project(small_study, tmp_path_factory):
  return copy_project(small_study, tmp_path_factory.mktemp("workflow") / "study")


def ALL_FIGURES_BUT(skip):
  """One job per figure of the small study, but those in `skip`."""
  return {f"figure{i}": 1 for i in range(1, 12) if f"figure{i}" not in skip}


def test_tables_open_in_pandas(project):
  barriers = pd.read_parquet(project / "results" / "barriers" / "digits-mlp")
  assert {"setting", "model", "expansion", "group", "seed", "epoch", "node",
          "barrier"} <= set(barriers)
  # seeds x (phi* and 2 candidates at epoch 0 + 2 candidates x 2 trained epochs) x n
  assert len(barriers) == 2 * (3 + 2 * 2) * 60
  assert (barriers.barrier >= 0).all() and set(barriers.group) == {"hiddens_0"}
  lm = pd.read_parquet(project / "results" / "metrics" / "wikitext-bert.parquet")
  assert set(lm.expansion) == {"f96", "f128"} and lm.val_acc.isna().all()
  assert (lm[lm.epoch == 0].gain == 0).all()
  assert lm[lm.epoch == 2].gain.gt(0).all()  # real training on real text helps
  heads = pd.read_parquet(project / "results" / "barriers" / "wikitext-bert" / "initial" /
                          "seed0.heads_0.parquet")
  assert set(heads.group) == {"heads_0"}
  scratch = pd.read_parquet(project / "results" / "scratch" / "wikitext-bert.parquet")
  assert (scratch[scratch.epoch == 1].M == 0).all()  # epoch 1 is the reference
  assert sorted(scratch.epoch.unique()) == [1, 2, 3]  # lm.scratch.epochs, not the base's 2
  m = pd.read_parquet(project / "results" / "metrics" / "digits-mlp.parquet")
  assert {"setting", "expansion", "seed", "epoch", "q", "n", "lambda", "m", "M", "gain",
          "val_acc", "sotl_e", "gain_best"} <= set(m)
  assert len(m) == 2 * 2 * 3 * 4  # expansions x seeds x epochs x (q, n)
  # Function-preserving expansion: no gain at t = 0, no SoTL-E before training.
  t0 = m[m.epoch == 0]
  assert (t0.gain == 0).all() and t0.sotl_e.isna().all()
  assert m[m.epoch > 0].sotl_e.lt(0).all()  # minus the training losses
  proxies = pd.read_parquet(project / "results" / "proxies" / "wikitext-bert.parquet")
  assert {"gradnorm", "snip", "grasp", "synflow", "jacov", "size"} <= set(proxies)
  corr = pd.read_parquet(project / "results" / "correlations" / "wikitext-bert.parquet")
  assert {"size", "synflow", "manifold"} <= set(corr.metric)
  summary = pd.read_parquet(project / "results" / "tables" / "correlations_summary.parquet")
  assert {"mean", "std", "count", "seeds", "ci_low", "ci_high"} <= set(summary)
  ranking = pd.read_parquet(project / "results" / "rankings" / "digits-mlp.parquet")
  assert ranking["rank"].tolist() == [1, 2] and "size" in ranking
  table4 = pd.read_parquet(project / "results" / "tables" / "table4.parquet")
  assert set(table4.setting) == {"digits-mlp", "wikitext-bert"} and "computation" in table4
  for f in (f"figure{i}" for i in range(1, 12)):
    for ext in ("png", "pdf"):
      assert (project / "results" / "figures" / f"{f}.{ext}").stat().st_size > 1000


def test_second_run_does_nothing(project):
  assert planned_jobs(project) == {}


def test_deleting_an_intermediate_reruns_only_its_dependants(project):
  (project / "results/expanded/digits-mlp/x2/seed1.msgpack").unlink()
  assert planned_jobs(project) == {
      "expand_candidate": 1, "train_candidate": 1, "barrier_set_initial": 1, "barrier_set": 1,
      "proxies": 1, "ranking": 1, "metrics": 1, "correlations": 1, "correlation_summary": 1,
      "loss_curves": 1, "figure1": 1, **ALL_FIGURES_BUT({"figure1", "figure5", "figure8",
                                                       "figure11"})}
  snakemake(project)
  assert planned_jobs(project) == {}


def test_changing_a_metric_hyperparameter_reruns_only_the_tables(project):
  cfg = project / "config" / "config.yaml"
  text = cfg.read_text()
  cfg.write_text(text.replace("q: [0.2, 0.4]", "q: [0.1, 0.4]"))
  try:
    assert planned_jobs(project) == {
        "metrics": 2, "metrics_group": 1, "scratch_metrics": 1, "correlations": 2,
        "correlation_summary": 1, **ALL_FIGURES_BUT({"figure1"})}
  finally:
    cfg.write_text(text)


@contextlib.contextmanager
def edited(module: str, line: str):
  """The package's own module with `line` appended, restored afterwards. The
  package itself, as a user edits it: a copy elsewhere would also move the data
  that ships inside it, and with it every input path."""
  path = ROOT / "manifold_metric" / module
  original = path.read_bytes()
  path.write_bytes(original + f"\n{line}\n".encode())
  try:
    yield
  finally:
    path.write_bytes(original)


def test_editing_package_code_reruns_exactly_what_uses_it(project):
  with edited("metric.py", "# an edit to the metric"):
    # The metric tables, the ranking (M_0), and what is built from them.
    assert planned_jobs(project) == {
        "metrics": 2, "metrics_group": 1, "scratch_metrics": 1, "ranking": 2,
        "correlations": 2, "correlation_summary": 1, **ALL_FIGURES_BUT({"figure1"})}
  with edited("plots.py", "# an edit to a figure helper"):
    # Figures only: no model is retrained, no table rebuilt.
    assert planned_jobs(project) == ALL_FIGURES_BUT(set())
  assert planned_jobs(project) == {}


def test_ranking_before_training_trains_no_candidate(tmp_path):
  p = make_project(tmp_path)
  target = "results/rankings/digits-mlp.md"
  assert planned_jobs(p, target) == {"prepare_dataset": 1, "train_base": 2,
                                     "expand_candidate": 4, "barrier_set_initial": 2,
                                     "proxies": 1, "ranking": 1}
  snakemake(p, target)
  assert not (p / "results" / "checkpoints").exists()
  md = (p / target).read_text()
  assert "ranked by the manifold metric" in md and "| x3" in md and "size" in md


def test_one_figure_builds_only_its_inputs(tmp_path):
  p = make_project(tmp_path)
  jobs = planned_jobs(p, "results/figures/figure1.png")
  assert jobs == {"prepare_dataset": 1, "train_base": 2, "expand_candidate": 4,
                  "train_candidate": 4, "loss_curves": 1, "figure1": 1}
