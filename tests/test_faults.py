"""Faults and bad input: corrupt inputs, configs that break the schema and
diverging training fail with a message naming the file, key or run. (A
workflow interrupted mid-job: tests/test_signals.py.)"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import workflow
from tests.workflow import SMALL_CONFIG, make_project

S = "digits-mlp"
METRICS = f"results/metrics/{S}.parquet"


def config(**changes) -> str:
  """The small study with one seed; top-level keys replaced, `metric` updated."""
  cfg = yaml.safe_load(SMALL_CONFIG.read_text())
  cfg["seeds"] = [0]
  cfg["metric"].update(changes.pop("metric", {}))
  cfg.update(changes)
  return yaml.safe_dump(cfg, sort_keys=False)


def snakemake(project: Path, *args, timeout=300) -> subprocess.CompletedProcess:
  return workflow.snakemake(project, *args, timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 0, proc.stdout
  return proc.stdout


def failed(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode not in (0, 124, 137), proc.stdout  # failed, not timed out
  return proc.stdout


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """One completed metric table of the small study (one seed)."""
  p = make_project(tmp_path_factory.mktemp("study"), config())
  ok(snakemake(p, METRICS))
  return p


def copy(study: Path, tmp_path: Path) -> Path:
  return Path(shutil.copytree(study, tmp_path / "study", symlinks=True))


# One candidate run slow enough to interrupt: 3000 cheap epochs (tens of
# seconds), checkpoints at epochs 20 and 3000.
SLOW_RUN = f"results/checkpoints/{S}/x2/seed0"
SLOW_TARGET = f"{SLOW_RUN}/log.parquet"


@pytest.fixture(scope="module")
def slow_study(tmp_path_factory):
  """A clean, uninterrupted run of SLOW_TARGET."""
  p = make_project(
      tmp_path_factory.mktemp("slow"), config(candidate={"epochs": 3000, "checkpoints": [20]})
  )
  ok(snakemake(p, SLOW_TARGET))
  return p


def test_failed_log_is_shown_in_the_terminal(slow_study, tmp_path):
  p = copy(slow_study, tmp_path)
  base = f"results/base/{S}/seed0.msgpack"
  data = (p / base).read_bytes()
  (p / base).write_bytes(data[: len(data) // 2])  # newer now: its dependants rerun
  # Without --show-failed-logs: profiles/default sets it.
  out = failed(snakemake(p, f"results/expanded/{S}/x2/seed0.msgpack"))
  assert "Error in rule train_candidate" in out
  log = f"logs/checkpoints/{S}/x2.log"
  assert f"Logfile {log}:" in out
  lines = (p / log).read_text().splitlines()
  assert lines and all(line in out for line in lines[-3:])  # the error, in the terminal
  assert base in out  # which names the corrupt file


def test_truncated_checkpoint_is_named(study, tmp_path):
  p = copy(study, tmp_path)
  base = f"results/base/{S}/seed0.msgpack"
  data = (p / base).read_bytes()
  (p / base).write_bytes(data[: len(data) // 2])  # newer now: its dependants rerun
  out = failed(snakemake(p, "--show-failed-logs", f"results/expanded/{S}/x2/seed0.msgpack"))
  assert "Error in rule train_candidate" in out
  assert f"checkpoint {base} is truncated or corrupt" in out
  assert not (p / f"results/expanded/{S}/x2/seed0.msgpack").exists()


def test_corrupt_table_is_named(study, tmp_path):
  p = copy(study, tmp_path)
  table = f"results/barriers/{S}/trained/seed0.parquet"
  (p / table).write_bytes(b"not a parquet file")
  out = failed(snakemake(p, "--show-failed-logs", METRICS))
  assert "Error in rule metrics" in out
  assert f"table {table} is not a readable Parquet file" in out
  assert not (p / METRICS).exists()  # The stale table is not left as if current.


@pytest.mark.parametrize(
    "change, message",
    [
        pytest.param(
            lambda c: c["settings"][S]["model"].update(kind="no_such_model"),
            f"['settings']['{S}']['model']['kind']",
            id="unknown-model-kind",
        ),
        pytest.param(
            lambda c: c["settings"][S]["expansions"]["x2"].update(factor=-2),
            f"['settings']['{S}']['expansions']['x2']['factor']",
            id="negative-factor",
        ),
        pytest.param(
            lambda c: c["metric"].update(q=[0.2, 1.5]), "['metric']['q']", id="q-outside-0-1"
        ),
        pytest.param(
            lambda c: c["metric"].update(n=[30, 600]),
            "config key metric.n: n = 600 is larger than metric.n_max = 60",
            id="n-above-n_max",
        ),
        # Mistakes that used to surface only when expanding, after base training.
        pytest.param(
            lambda c: c["settings"][S]["expansions"].update(x2={"kind": "widen_first", "width": 8}),
            f"config key settings.{S}.expansions.x2.width: 8 does not widen the base's 8",
            id="width-not-wider",
        ),
        pytest.param(
            lambda c: c["settings"][S]["expansions"]["x2"].update(width=20),
            f"config key settings.{S}.expansions.x2: widen_first takes exactly one of "
            "width and factor",
            id="width-and-factor",
        ),
        pytest.param(
            lambda c: c["settings"][S]["expansions"].update(x2={"kind": "deepen", "after": 3}),
            f"config key settings.{S}.expansions.x2.after: deepen after 3 " "is outside 0..0",
            id="deepen-after-out-of-range",
        ),
        pytest.param(
            lambda c: c["settings"].update({"a.b": c["settings"].pop(S)}),
            "'a.b' does not match",
            id="setting-name-with-dot",
        ),
        pytest.param(
            lambda c: c["settings"][S].update(model={"kind": "cnn", "hidden": [8]}),
            f"config key settings.{S}.model: a cnn model takes channels, dense, not hidden",
            id="keys-of-another-kind",
        ),
        pytest.param(
            lambda c: c.pop("lm"),
            "config key lm: setting wikitext-bert is a BERT: the " "config needs an lm section",
            id="bert-without-lm",
        ),
        # What the data cannot give: digits has 1,437 training images.
        pytest.param(
            lambda c: c["metric"].update(batch_size=100000),
            "config key metric.batch_size: 100000 is more than the 1442 training examples",
            id="metric-batch-larger-than-the-data",
        ),
        pytest.param(
            lambda c: c["lm"].update(metric_batch_size=500),
            "config key lm.metric_batch_size: 500 is more than the 187 sequences",
            id="bert-metric-batch-larger-than-the-data",
        ),
    ],
)
def test_invalid_config_is_rejected_before_any_job(tmp_path, change, message):
  cfg = yaml.safe_load(config())
  change(cfg)
  p = make_project(tmp_path, yaml.safe_dump(cfg))
  out = failed(snakemake(p))
  assert message in out
  assert not (p / "results").exists() and not (p / "logs").exists()


@pytest.mark.parametrize(
    "lr, reason",
    [
        (1e30, r"training diverged at epoch \d+ \(loss sum nan\)"),
        # A loss that explodes by orders of magnitude without turning NaN.
        (
            1e4,
            r"training loss exploded at epoch \d+: mean minibatch loss [\d.e+]+, more than 10 "
            r"times a uniform prediction's",
        ),
        # A base that never leaves chance level.
        (
            1e-9,
            r"not learning: the best epoch \(\d+\) reached performance 0\.\d+, against "
            r"0\.\d+ for chance",
        ),
    ],
    ids=["nan", "exploding", "stuck-at-chance"],
)
def test_a_run_that_is_not_learning_fails_naming_the_run(tmp_path, lr, reason):
  cfg = yaml.safe_load(config())
  cfg["train"]["lr"] = lr
  p = make_project(tmp_path, yaml.safe_dump(cfg))
  # --keep-going (as on the cluster): everything that does not need the run goes on.
  out = failed(snakemake(p, "--keep-going", "--show-failed-logs", METRICS))
  assert "Error in rule train_base" in out
  assert re.search(rf"base {S} seed 0: {reason}", out), out
  assert (p / "results/data/digits.npz").exists()
  assert not (p / f"results/base/{S}/seed0.msgpack").exists()
  for d in ("expanded", "checkpoints", "barriers", "metrics"):
    assert not (p / "results" / d).exists()


def test_verify_names_every_damaged_file_whatever_its_time(study, tmp_path):
  """`snakemake verify` loads every checkpoint, table, dataset and vocabulary;
  a file damaged in place keeping its time (which Snakemake cannot see) is
  named, one of each kind."""
  p = copy(study, tmp_path)
  ok(snakemake(p, "verify"))
  damaged = [
      f"results/base/{S}/seed0.msgpack",
      f"results/barriers/{S}/trained/seed0.parquet",
      "results/data/digits.npz",
      f"results/metrics/{S}.parquet",
  ]
  for name in damaged:
    path = p / name
    times = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
  assert "Nothing to be done" in ok(snakemake(p, METRICS))  # Snakemake sees nothing wrong
  out = failed(snakemake(p, "verify"))
  assert "4 of " in out
  named = [line for line in out.splitlines() if "truncated or" in line or "not a readable" in line]
  for name in damaged:
    assert any(name in line for line in named), (name, named)
  assert not any("initial/seed0.parquet" in line for line in named)  # intact files pass
