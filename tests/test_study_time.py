"""benchmarks/study_time.py: its reading of a Snakemake log and what
start-up it charges each rule."""

import importlib.util
import json
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


def test_each_rule_is_charged_its_own_scripts_start(tmp_path):
  scripts, meta = tmp_path / "workflow" / "scripts", tmp_path / ".snakemake" / "metadata"
  scripts.mkdir(parents=True)
  meta.mkdir(parents=True)
  (scripts / "t.py").write_text(
      '"""Doc."""\n\nimport sys\n\nsys.stderr = open(snakemake.log[0], "w")\n\n'
      "import pandas as pd\n\nfrom manifold_metric import tables\n\n"
      "def f():\n  import scipy.stats\n\nx = pd.DataFrame()\n"
  )
  # As Snakemake 9 records an output of a `script:` rule, and of a shell rule.
  (meta / "a").write_text(json.dumps({"rule": "metrics", "code": '        "../scripts/t.py"\n'}))
  (meta / "b").write_text(json.dumps({"rule": "copy", "code": None}))
  (meta / "long").mkdir()  # a long record name, split by Snakemake
  (meta / "long" / "c").write_text(json.dumps({"rule": "ranking", "code": '"../scripts/t.py"'}))
  assert study_time.rule_scripts(tmp_path) == {
      "metrics": str(scripts / "t.py"),
      "ranking": str(scripts / "t.py"),
  }
  code = study_time.start_code(str(scripts / "t.py"))
  # Module-level imports only, in order: not the work, nor imports inside it.
  own = "import sys\nimport pandas as pd\nfrom manifold_metric import tables"
  assert code == study_time.PREAMBLE + own
  compile(code, "start", "exec")
