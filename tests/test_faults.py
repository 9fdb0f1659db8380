"""Faults and bad input: a workflow killed mid-job resumes without using what
the killed job left behind; corrupt inputs, configs that break the schema and
diverging training fail with a message naming the file, key or run."""

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from manifold_metric import io
from tests import workflow
from tests.workflow import ENV, SMALL_CONFIG, SNAKEMAKE, make_project

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


def kill_when(project: Path, log: str, pattern: str, *args, timeout=240) -> list[dict]:
  """Starts Snakemake, waits until its job's `log` matches `pattern`, then
  SIGKILLs the whole process group (Snakemake and its running job).

  Returns the environments of the job processes (the rule scripts) alive then.
  """
  out = open(project / "killed.out", "w")
  proc = subprocess.Popen(["timeout", "-k", "30", str(timeout), SNAKEMAKE, "--cores", "2", *args],
                          cwd=project, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                          start_new_session=True)
  path, deadline = project / log, time.time() + timeout
  while not (path.exists() and re.search(pattern, path.read_text(), re.M)):
    assert proc.poll() is None, f"finished before {log} showed {pattern!r}:\n" + \
        (project / "killed.out").read_text()
    assert time.time() < deadline, f"{log} never showed {pattern!r}"
    time.sleep(0.05)
  envs = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      if (os.getpgid(int(pid)) == proc.pid and
          b"/.snakemake/scripts/" in Path(f"/proc/{pid}/cmdline").read_bytes()):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        envs.append(dict(e.decode().split("=", 1) for e in env if b"=" in e))
    except (ProcessLookupError, FileNotFoundError):
      pass
  os.killpg(proc.pid, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  out.close()
  return envs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """One completed metric table of the small study (one seed)."""
  p = make_project(tmp_path_factory.mktemp("study"), config())
  ok(snakemake(p, METRICS))
  return p


def copy(study: Path, tmp_path: Path) -> Path:
  return Path(shutil.copytree(study, tmp_path / "study", symlinks=True))


def test_sigkill_mid_training_and_mid_barriers_then_resume(tmp_path):
  # 300 cheap epochs and 20000 nodes: seconds of training and barriers to kill.
  p = make_project(tmp_path, config(
      candidate={"epochs": 300, "checkpoint_every": 50},
      metric={"n_max": 20000, "n": [100, 20000], "main_n": 20000}))
  run = p / f"results/checkpoints/{S}/x2/seed0"
  target = f"results/barriers/{S}/x2/seed0.parquet"
  envs = kill_when(p, f"logs/checkpoints/{S}/x2/seed0.log", r"epoch (1[2-9]\d|2\d\d)/300",
                   target)
  # The job got the workflow's JAX setting although this process lacks it.
  assert envs and all(e.get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false" for e in envs)
  saved = sorted(run.glob("epoch*.msgpack"))
  assert 1 <= len(saved) < 6 and not (run / "log.parquet").exists()
  for f in saved:  # Written atomically: whatever has an output's name is complete.
    io.load_checkpoint(f)
  # Snakemake refuses the partial outputs and says how to go on ...
  out = failed(snakemake(p, target))
  assert "IncompleteFilesException" in out and "--rerun-incomplete" in out
  assert all(str(f.relative_to(p)) in out for f in saved)
  assert not (p / f"logs/barriers/{S}/x2").exists()  # ... before any job starts.
  # ... and then that the killed Snakemake left its lock behind.
  out = failed(snakemake(p, "--rerun-incomplete", target))
  assert "LockException" in out and "--unlock" in out
  ok(snakemake(p, "--unlock"))
  first_kill = time.time()
  kill_when(p, f"logs/barriers/{S}/x2/seed0.log", r"^epoch \d+: n=", "--rerun-incomplete",
            target)
  assert not (p / target).exists()
  ok(snakemake(p, "--unlock"))
  # The table was never written, so only the lock stood in the way.
  out = ok(snakemake(p, target))
  assert "barrier_set" in out and "train_candidate" not in out
  barriers = pd.read_parquet(p / target)
  assert sorted(barriers.epoch.unique()) == [0, 50, 100, 150, 200, 250, 300]
  assert len(barriers) == 7 * 20000 and barriers.barrier.notna().all()
  assert list(pd.read_parquet(run / "log.parquet").epoch) == list(range(301))
  outputs = {f"epoch{e:04d}.msgpack" for e in range(50, 301, 50)} | {"log.parquet"}
  assert {f.name for f in run.iterdir() if not f.name.startswith(".")} == outputs
  # Temporaries a kill may leave behind are hidden names, never an output's.
  assert all(f.name.endswith(".tmp") for f in run.iterdir() if f.name.startswith("."))
  for name in outputs - {"log.parquet"}:  # Rebuilt after the first kill, complete.
    assert (run / name).stat().st_mtime > first_kill
    io.load_checkpoint(run / name)
  # Results get the permissions of any file written under the umask, not
  # mkstemp's private 0600 (others on a cluster must read them).
  umask = os.umask(0o022)
  os.umask(umask)
  assert stat.S_IMODE((p / target).stat().st_mode) == 0o666 & ~umask


def test_truncated_checkpoint_is_named(study, tmp_path):
  p = copy(study, tmp_path)
  base = f"results/base/{S}/seed0.msgpack"
  data = (p / base).read_bytes()
  (p / base).write_bytes(data[:len(data) // 2])  # newer now: its dependants rerun
  out = failed(snakemake(p, "--show-failed-logs", f"results/expanded/{S}/x2/seed0.msgpack"))
  assert "Error in rule expand_candidate" in out
  assert f"checkpoint {base} is truncated or corrupt" in out
  assert not (p / f"results/expanded/{S}/x2/seed0.msgpack").exists()


def test_corrupt_table_is_named(study, tmp_path):
  p = copy(study, tmp_path)
  table = f"results/barriers/{S}/x2/seed0.parquet"
  (p / table).write_bytes(b"not a parquet file")
  out = failed(snakemake(p, "--show-failed-logs", METRICS))
  assert "Error in rule metrics" in out
  assert f"table {table} is not a readable Parquet file" in out
  assert not (p / METRICS).exists()  # The stale table is not left as if current.


@pytest.mark.parametrize("change, message", [
    pytest.param(lambda c: c["settings"][S]["model"].update(kind="no_such_model"),
                 f"['settings']['{S}']['model']['kind']", id="unknown-model-kind"),
    pytest.param(lambda c: c["settings"][S]["expansions"]["x2"].update(factor=-2),
                 f"['settings']['{S}']['expansions']['x2']['factor']", id="negative-factor"),
    pytest.param(lambda c: c["metric"].update(q=[0.2, 1.5]), "['metric']['q']",
                 id="q-outside-0-1"),
    pytest.param(lambda c: c["metric"].update(n=[30, 600]),
                 "config key metric.n: n = 600 is larger than metric.n_max = 60",
                 id="n-above-n_max"),
])
def test_invalid_config_is_rejected_before_any_job(tmp_path, change, message):
  cfg = yaml.safe_load(config())
  change(cfg)
  p = make_project(tmp_path, yaml.safe_dump(cfg))
  out = failed(snakemake(p))
  assert message in out
  assert not (p / "results").exists() and not (p / "logs").exists()


def test_diverging_training_fails_naming_the_run(tmp_path):
  cfg = yaml.safe_load(config())
  cfg["train"]["lr"] = 1e6
  p = make_project(tmp_path, yaml.safe_dump(cfg))
  # --keep-going (as on the cluster): everything that does not need the run goes on.
  out = failed(snakemake(p, "--keep-going", "--show-failed-logs", METRICS))
  assert "Error in rule train_base" in out
  assert re.search(rf"base {S} seed 0: training diverged at epoch \d+ \(loss sum nan\)", out)
  assert (p / "results/data/digits.npz").exists()
  assert not (p / f"results/base/{S}/seed0.msgpack").exists()
  for d in ("expanded", "checkpoints", "barriers", "metrics"):
    assert not (p / "results" / d).exists()
