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

import jax
import numpy as np
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


def start(project: Path, *args, timeout=300) -> subprocess.Popen:
  """Starts `snakemake --cores 2` in the background, in its own session (its
  own process group, as a terminal's foreground job), output to run.out."""
  out = open(project / "run.out", "w")
  return subprocess.Popen(["timeout", "-k", "30", str(timeout), SNAKEMAKE, "--cores", "2", *args],
                          cwd=project, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                          start_new_session=True)


def wait_for(project: Path, proc: subprocess.Popen, log: str, pattern: str, timeout=240):
  """Waits until the running job's `log` matches `pattern`."""
  path, deadline = project / log, time.time() + timeout
  while not (path.exists() and re.search(pattern, path.read_text(), re.M)):
    assert proc.poll() is None, f"finished before {log} showed {pattern!r}:\n" + \
        (project / "run.out").read_text()
    assert time.time() < deadline, f"{log} never showed {pattern!r}"
    time.sleep(0.05)


def ctrl_c(proc: subprocess.Popen):
  """What Ctrl-C does: one SIGINT to each process of the foreground group
  (Snakemake and its jobs), here all but the `timeout` wrapper, which would
  send Snakemake a second one."""
  for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
    try:
      if pid != proc.pid and os.getpgid(pid) == proc.pid:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
      pass


def running(pid: int) -> bool:
  """Alive and not a zombie (an orphan's reaper may be slow or absent)."""
  try:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
  except (FileNotFoundError, ProcessLookupError):
    return False


def jobs(project: Path) -> dict[int, dict]:
  """The running job processes of the project (each rule's script runs as
  `python <project>/.snakemake/scripts/tmp*.py`), with their environments."""
  found = {}
  for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
    try:
      if (f"{project}/.snakemake/scripts/".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
          and running(pid)):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        found[pid] = dict(e.decode().split("=", 1) for e in env if b"=" in e)
    except (ProcessLookupError, FileNotFoundError):
      pass
  return found


def locks(project: Path) -> list[str]:
  d = project / ".snakemake" / "locks"
  return sorted(f.name for f in d.iterdir()) if d.exists() else []


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
SLOW_LOG = f"logs/checkpoints/{S}/x2/seed0.log"
PAST_20 = r"epoch (2[1-9]|[3-9]\d|\d{3,4})/3000"  # epoch0020.msgpack was written


@pytest.fixture(scope="module")
def slow_study(tmp_path_factory):
  """A clean, uninterrupted run of SLOW_TARGET."""
  p = make_project(tmp_path_factory.mktemp("slow"),
                   config(candidate={"epochs": 3000, "checkpoints": [20]}))
  ok(snakemake(p, SLOW_TARGET))
  return p


def untrained(slow_study: Path, tmp_path: Path) -> Path:
  """A copy of slow_study without the training run and the barrier set: the
  plain command trains again (its inputs are kept)."""
  p = copy(slow_study, tmp_path)
  shutil.rmtree(p / SLOW_RUN)
  (p / SLOW_LOG).unlink()
  return p


def resume(p: Path, clean: Path, interrupted_at: float) -> str:
  """The README's command after an interruption: it runs without
  IncompleteFilesException or LockException, retrains the interrupted run
  only, leaves what a clean run leaves and no lock. Returns its output."""
  out = ok(snakemake(p, SLOW_TARGET))
  assert "IncompleteFilesException" not in out and "LockException" not in out
  assert "train_candidate" in out and "expand_candidate" not in out
  assert_same_as_clean_run(p, clean, interrupted_at)
  assert not locks(p) and not list((p / ".snakemake" / "owners").iterdir())
  return out


def assert_same_as_clean_run(p: Path, clean: Path, interrupted_at: float):
  pd.testing.assert_frame_equal(pd.read_parquet(p / SLOW_TARGET),
                                pd.read_parquet(clean / SLOW_TARGET))
  _, got, _ = io.load_checkpoint(p / SLOW_RUN / "epoch3000.msgpack")
  _, want, _ = io.load_checkpoint(clean / SLOW_RUN / "epoch3000.msgpack")
  jax.tree.map(np.testing.assert_array_equal, got, want)  # the same training, bit for bit
  outputs = {"epoch0020.msgpack", "epoch3000.msgpack", "log.parquet"}
  assert {f.name for f in (p / SLOW_RUN).iterdir() if not f.name.startswith(".")} == outputs
  # Temporaries a kill may leave behind are hidden names, never an output's.
  assert all(f.name.endswith(".tmp") for f in (p / SLOW_RUN).iterdir() if f.name.startswith("."))
  for name in outputs:  # All rebuilt after the interruption, complete.
    assert (p / SLOW_RUN / name).stat().st_mtime > interrupted_at
  for name in outputs - {"log.parquet"}:
    io.load_checkpoint(p / SLOW_RUN / name)
  # Results get the permissions of any file written under the umask, not
  # mkstemp's private 0600 (others on a cluster must read them).
  umask = os.umask(0o022)
  os.umask(umask)
  assert stat.S_IMODE((p / SLOW_TARGET).stat().st_mode) == 0o666 & ~umask


def test_sigint_mid_training_then_the_same_command_resumes(slow_study, tmp_path):
  p = untrained(slow_study, tmp_path)
  proc = start(p, SLOW_TARGET)
  wait_for(p, proc, SLOW_LOG, PAST_20)
  assert (p / SLOW_RUN / "epoch0020.msgpack").exists()
  ctrl_c(proc)
  assert proc.wait(timeout=120) not in (0, 124, 137), (p / "run.out").read_text()
  interrupted_at = time.time()
  assert not jobs(p)  # The job was interrupted with Snakemake ...
  assert (p / SLOW_RUN / "epoch0020.msgpack").exists()  # ... and left an incomplete output.
  # The README's command again, nothing typed in between: the interrupted job's
  # outputs are rebuilt (rerun-incomplete in profiles/default), not refused.
  resume(p, slow_study, interrupted_at)


def test_sigkill_of_snakemake_orphans_its_job_and_the_same_command_resumes(slow_study, tmp_path):
  p = untrained(slow_study, tmp_path)
  proc = start(p, SLOW_TARGET)
  wait_for(p, proc, SLOW_LOG, PAST_20)
  orphans = jobs(p)
  # The job got the workflow's JAX setting although this process lacks it.
  assert orphans and all(e.get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false"
                         for e in orphans.values())
  # SIGKILL to Snakemake alone (`kill -9 <pid>`, a lost session): its job
  # is orphaned and keeps training; the lock and incomplete markers stay.
  snakemake_pid, = map(int, Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())
  os.kill(snakemake_pid, signal.SIGKILL)
  assert proc.wait(timeout=60) in (-signal.SIGKILL, 128 + signal.SIGKILL)  # timeout passes it on
  interrupted_at = time.time()
  assert all(running(pid) for pid in orphans) and locks(p)
  saved = sorted((p / SLOW_RUN).glob("epoch*.msgpack"))
  assert [f.name for f in saved] == ["epoch0020.msgpack"]
  io.load_checkpoint(saved[0])  # Written atomically: what has an output's name is complete.
  # A dry run says what the next run will do, and does nothing.
  out = ok(snakemake(p, "-n", SLOW_TARGET))
  assert f"local snakemake pid {snakemake_pid} on " in out and "dry run" in out
  assert all(running(pid) for pid in orphans) and locks(p)
  # The README's command again: it stops the orphan, removes the stale lock,
  # rebuilds the incomplete outputs and finishes; no --unlock, no flags.
  out = resume(p, slow_study, interrupted_at)
  line, = [l for l in out.splitlines() if "Recovering from an interrupted run" in l]
  assert f"local snakemake pid {snakemake_pid} on " in line
  assert all(str(pid) in line for pid in orphans) and "removed its stale lock" in line
  assert not any(running(pid) for pid in orphans)


def test_concurrent_run_is_refused_while_the_first_runs(slow_study, tmp_path):
  p = untrained(slow_study, tmp_path)
  proc = start(p, SLOW_TARGET)
  try:
    wait_for(p, proc, SLOW_LOG, r"epoch \d+/3000")
    first = jobs(p)
    out = failed(snakemake(p, SLOW_TARGET))
    # Refused by Snakemake's lock, which the recovery leaves alone: its owner runs.
    assert "LockException" in out and "may belong to a run in progress" in out
    assert "Recovering" not in out
    assert proc.poll() is None and first and all(running(pid) for pid in first)
    assert locks(p) and len(list((p / ".snakemake" / "owners").iterdir())) == 1
  finally:
    ctrl_c(proc)
    proc.wait(timeout=120)


def test_failed_log_is_shown_in_the_terminal(slow_study, tmp_path):
  p = copy(slow_study, tmp_path)
  base = f"results/base/{S}/seed0.msgpack"
  data = (p / base).read_bytes()
  (p / base).write_bytes(data[:len(data) // 2])  # newer now: its dependants rerun
  # Without --show-failed-logs: profiles/default sets it.
  out = failed(snakemake(p, f"results/expanded/{S}/x2/seed0.msgpack"))
  assert "Error in rule expand_candidate" in out
  log = f"logs/expanded/{S}/x2/seed0.log"
  assert f"Logfile {log}:" in out
  lines = (p / log).read_text().splitlines()
  assert lines and all(line in out for line in lines[-3:])  # the error, in the terminal
  assert base in out  # which names the corrupt file


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
  table = f"results/barriers/{S}/trained/seed0.parquet"
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
    # Mistakes that used to surface only when expanding, after base training.
    pytest.param(lambda c: c["settings"][S]["expansions"].update(
        x2={"kind": "widen_first", "width": 8}),
                 f"config key settings.{S}.expansions.x2.width: 8 does not widen the base's 8",
                 id="width-not-wider"),
    pytest.param(lambda c: c["settings"][S]["expansions"]["x2"].update(width=20),
                 f"config key settings.{S}.expansions.x2: widen_first takes exactly one of "
                 "width and factor", id="width-and-factor"),
    pytest.param(lambda c: c["settings"][S]["expansions"].update(
        x2={"kind": "deepen", "after": 3}), f"config key settings.{S}.expansions.x2.after: 3 is "
        "outside 0..0", id="deepen-after-out-of-range"),
    pytest.param(lambda c: c["settings"].update({"a.b": c["settings"].pop(S)}),
                 "'a.b' does not match", id="setting-name-with-dot"),
    pytest.param(lambda c: c["settings"][S].update(model={"kind": "cnn", "hidden": [8]}),
                 f"config key settings.{S}.model: a cnn model takes channels, dense, not hidden",
                 id="keys-of-another-kind"),
    pytest.param(lambda c: c.pop("lm"), "config key lm: setting wikitext-bert is a BERT: the "
                 "config needs an lm section", id="bert-without-lm"),
])
def test_invalid_config_is_rejected_before_any_job(tmp_path, change, message):
  cfg = yaml.safe_load(config())
  change(cfg)
  p = make_project(tmp_path, yaml.safe_dump(cfg))
  out = failed(snakemake(p))
  assert message in out
  assert not (p / "results").exists() and not (p / "logs").exists()


@pytest.mark.parametrize("lr, reason", [
    (1e30, r"training diverged at epoch \d+ \(loss sum nan\)"),
    # A loss that explodes by orders of magnitude without turning NaN.
    (1e4, r"training loss exploded at epoch \d+: mean minibatch loss [\d.e+]+, more than 10 "
          r"times a uniform prediction's"),
    # A base that never leaves chance level.
    (1e-9, r"not learning: the best epoch \(\d+\) reached performance 0\.\d+, against "
           r"0\.\d+ for chance"),
], ids=["nan", "exploding", "stuck-at-chance"])
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
