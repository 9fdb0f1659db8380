"""End to end: the small study runs, reruns nothing, and rebuilds exactly
what depends on a deleted or changed intermediate."""

import pandas as pd
import pytest

from tests.workflow import make_project, planned_jobs, snakemake


@pytest.fixture(scope="module")
def project(tmp_path_factory):
  p = make_project(tmp_path_factory.mktemp("study"))
  snakemake(p)
  return p


def test_tables_open_in_pandas(project):
  barriers = pd.read_parquet(project / "results" / "barriers" / "digits-mlp")
  assert {"setting", "model", "expansion", "seed", "epoch", "node", "barrier"} <= set(barriers)
  assert len(barriers) == 2 * (60 + 2 * 3 * 60)  # seeds x (base + 2 runs x 3 epochs) x n
  assert (barriers.barrier >= 0).all()
  lm = pd.read_parquet(project / "results" / "metrics" / "wikitext-bert.parquet")
  assert set(lm.expansion) == {"f96", "f128"} and lm.val_acc.isna().all()
  assert (lm[lm.epoch == 0].gain == 0).all()
  assert lm[lm.epoch == 2].gain.gt(0).all()  # real training on real text helps
  scratch = pd.read_parquet(project / "results" / "scratch" / "wikitext-bert.parquet")
  assert (scratch[scratch.epoch == 1].M == 0).all()  # epoch 1 is the reference
  m = pd.read_parquet(project / "results" / "metrics" / "digits-mlp.parquet")
  assert {"setting", "expansion", "seed", "epoch", "q", "n", "lambda", "m", "M", "gain",
          "val_acc", "sotl_e", "gain_best"} <= set(m)
  assert len(m) == 2 * 2 * 3 * 4  # expansions x seeds x epochs x (q, n)
  # Function-preserving expansion: no gain at t = 0, no SoTL-E before training.
  t0 = m[m.epoch == 0]
  assert (t0.gain == 0).all() and t0.sotl_e.isna().all()
  assert m[m.epoch > 0].sotl_e.gt(0).all()
  for f in ("figure1", "figure3", "figure5", "figure11"):
    for ext in ("png", "pdf"):
      assert (project / "results" / "figures" / f"{f}.{ext}").stat().st_size > 1000


def test_second_run_does_nothing(project):
  assert planned_jobs(project) == {}


def test_deleting_an_intermediate_reruns_only_its_dependants(project):
  (project / "results/expanded/digits-mlp/x2/seed1.msgpack").unlink()
  assert planned_jobs(project) == {
      "expand_candidate": 1, "train_candidate": 1, "barrier_set": 1, "proxies": 1,
      "metrics": 1, "correlations": 1, "correlation_summary": 1, "figure3": 1,
      "loss_curves": 1, "figure1": 1}
  snakemake(project)
  assert planned_jobs(project) == {}


def test_changing_a_metric_hyperparameter_reruns_only_the_tables(project):
  cfg = project / "config" / "config.yaml"
  text = cfg.read_text()
  cfg.write_text(text.replace("q: [0.2, 0.4]", "q: [0.1, 0.4]"))
  try:
    assert planned_jobs(project) == {
        "metrics": 2, "metrics_group": 1, "scratch_metrics": 1, "correlations": 2,
        "correlation_summary": 1, "figure3": 1, "figure5": 1, "figure11": 1}
  finally:
    cfg.write_text(text)


def test_one_figure_builds_only_its_inputs(tmp_path):
  p = make_project(tmp_path)
  jobs = planned_jobs(p, "results/figures/figure1.png")
  assert jobs == {"prepare_dataset": 1, "train_base": 2, "expand_candidate": 4,
                  "train_candidate": 4, "loss_curves": 1, "figure1": 1}
