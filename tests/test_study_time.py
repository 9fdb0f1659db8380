"""benchmarks/study_time.py: its reading of a Snakemake log and which
imports it charges each rule."""

import importlib.util
import pathlib

SPEC = importlib.util.spec_from_file_location(
    "study_time", pathlib.Path(__file__).parent.parent / "benchmarks" / "study_time.py"
)
study_time = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study_time)

# The layout Snakemake 9 writes (abridged from a real run): two jobs started
# in one second, finished one and four seconds later.
LOG = """\
Select jobs to execute...
Execute 2 jobs...
[Mon Dec  7 15:03:52 2026]
localrule prepare_dataset:
    output: results/data/fmnist.npz
    jobid: 3
    wildcards: dataset=fmnist
[Mon Dec  7 15:03:52 2026]
localrule build_vocab:
    output: results/data/wikitext.vocab.json
    jobid: 38
[Mon Dec  7 15:03:53 2026]
Finished jobid: 38 (Rule: build_vocab)
1 of 85 steps (1%) done
[Mon Dec  7 15:03:56 2026]
Finished jobid: 3 (Rule: prepare_dataset)
"""


def test_jobs_pairs_each_start_with_its_finish():
  assert study_time.jobs(LOG) == [("build_vocab", 1.0), ("prepare_dataset", 4.0)]


def test_a_job_that_never_finished_is_not_counted():
  assert study_time.jobs(LOG.rsplit("[", 1)[0]) == [("build_vocab", 1.0)]


def test_each_rule_is_charged_its_scripts_imports():
  assert study_time.kind("prepare_dataset") == "data"
  assert study_time.kind("correlations") == "table"
  assert study_time.kind("figure7") == "figure"
  # loss_curves and table4 load checkpoints and run models.
  for rule in ("train_candidate", "barrier_set_lm", "loss_curves", "table4"):
    assert study_time.kind(rule) == "model"
