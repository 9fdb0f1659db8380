"""Interruptions of a local run: SIGINT or SIGTERM to snakemake, Ctrl-C to its
process group and `kill -9` of snakemake. Each stops the running jobs within
seconds (the recovery stops a killed run's orphans), and the same command
afterwards redoes only the jobs that were stopped, keeps every output of the
jobs that completed and leaves what a clean run leaves.

The runs train candidates for 3000 cheap epochs (seconds each, checkpoints at
epochs 20 and 3000), one seed, so that a signal lands mid-job. Files are found
by their results/ paths and a job's log by its expansion, whatever job
trains them; redone jobs are counted from Snakemake's job stats."""

import contextlib
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
import psutil
import pytest
import yaml

from manifold_metric import checkpoints
from tests import workflow
from tests.workflow import ENV, SMALL_CONFIG, SNAKEMAKE, make_project

S = "digits-mlp"
RUN = {e: f"results/checkpoints/{S}/{e}/seed0" for e in ("x2", "x3")}
TABLE = {e: f"{run}/log.parquet" for e, run in RUN.items()}
OUTPUTS = {"epoch0020.msgpack", "epoch3000.msgpack", "log.parquet"}
INITIAL = f"results/barriers/{S}/initial/seed0.parquet"  # a job of seconds
PAST_20 = r"epoch (2[1-9]|[3-9]\d|\d{3,4})/3000"  # epoch0020.msgpack was written
EXIT_WITHIN = 10  # seconds from the signal to snakemake's exit, on 2 busy cores


def xla_threads(pid: int) -> int:
  """Threads of XLA's CPU pool in a running process (one per core unless
  PJRT_NPROC says otherwise)."""
  task = Path(f"/proc/{pid}/task")
  names = []
  for t in task.iterdir():
    with contextlib.suppress(FileNotFoundError):  # a thread that just ended
      names.append((t / "comm").read_text().strip())
  return names.count("tf_XLAEigen")


def config(**changes) -> str:
  """The small study with one seed; top-level keys replaced."""
  cfg = yaml.safe_load(SMALL_CONFIG.read_text())
  cfg["seeds"] = [0]
  cfg.update(changes)
  return yaml.safe_dump(cfg, sort_keys=False)


def snakemake(project: Path, *args, timeout=300) -> subprocess.CompletedProcess:
  return workflow.snakemake(project, *args, timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 0, proc.stdout
  return proc.stdout


def start(project: Path, *args, timeout=300) -> subprocess.Popen:
  """Starts `snakemake --cores 2` in the background, in its own session (its
  own process group, as a terminal's foreground job), output to run.out."""
  out = open(project / "run.out", "w")
  return subprocess.Popen(
      ["timeout", "-k", "30", str(timeout), SNAKEMAKE, "--cores", "2", *args],
      cwd=project,
      env=ENV,
      stdout=out,
      stderr=subprocess.STDOUT,
      start_new_session=True,
  )


def snakemake_process(proc: subprocess.Popen) -> psutil.Process:
  """The snakemake process under the `timeout` wrapper."""
  (child,) = psutil.Process(proc.pid).children()
  return child


def job_log(project: Path, expansion: str) -> Path | None:
  """The log of the job that trains `expansion` (logs/checkpoints/...)."""
  for f in sorted((project / "logs" / "checkpoints").glob("**/*.log")):
    if expansion in f.relative_to(project / "logs" / "checkpoints").with_suffix("").parts:
      return f
  return None


def trained_past_20(project: Path, expansion: str) -> bool:
  log = job_log(project, expansion)
  return bool(log and re.search(PAST_20, log.read_text(errors="replace"), re.M))


def wait_until(project: Path, proc: subprocess.Popen, what: str, condition, timeout=240):
  deadline = time.time() + timeout
  while not condition():
    assert proc.poll() is None, f"finished before {what}:\n" + (project / "run.out").read_text()
    assert time.time() < deadline, f"never {what}:\n" + (project / "run.out").read_text()
    time.sleep(0.05)


def running(pid: int) -> bool:
  """Alive and not a zombie (an orphan's reaper may be slow or absent)."""
  try:
    return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


def jobs(project: Path) -> dict[int, psutil.Process]:
  """The running job processes of the project (each rule's script runs as
  `python <project>/.snakemake/scripts/tmp*.py`)."""
  marker = f"{project}/.snakemake/scripts/"
  found = {}
  for proc in psutil.process_iter(["cmdline"]):
    if any(marker in a for a in proc.info["cmdline"] or ()) and running(proc.pid):
      found[proc.pid] = proc
  return found


def job_of(project: Path, expansion: str) -> psutil.Process:
  """The job process writing the log of `expansion`'s training."""
  log = str(job_log(project, expansion))
  found = [p for p in jobs(project).values() if log in (f.path for f in p.open_files())]
  assert len(found) == 1, found
  return found[0]


def ctrl_c(proc: subprocess.Popen):
  """What Ctrl-C does: one SIGINT to each process of the foreground group
  (Snakemake and its jobs), here all but the `timeout` wrapper, which would
  send Snakemake a second one."""
  for p in psutil.process_iter():
    try:
      if p.pid != proc.pid and os.getpgid(p.pid) == proc.pid:
        os.kill(p.pid, signal.SIGINT)
    except ProcessLookupError:
      pass


def locks(project: Path) -> list[str]:
  d = project / ".snakemake" / "locks"
  return sorted(f.name for f in d.iterdir()) if d.exists() else []


def job_stats(out: str) -> dict[str, int]:
  """The jobs a run executes, per rule (its first "Job stats:" table)."""
  if "Job stats:" not in out:
    return {}
  table = out.split("Job stats:", 1)[1].split("total", 1)[0]
  return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  """A clean, uninterrupted run of both candidates (x2, x3) and the barrier sets at t = 0."""
  p = make_project(
      tmp_path_factory.mktemp("clean"), config(candidate={"epochs": 3000, "checkpoints": [20]})
  )
  ok(snakemake(p, *TABLE.values(), INITIAL))
  return p


def copy_without(clean: Path, tmp_path: Path, *remove: str) -> Path:
  """A copy of the clean project without some results (and their logs): the
  same command builds them again, from the inputs kept."""
  p = Path(shutil.copytree(clean, tmp_path / "study", symlinks=True))
  for path in remove:
    if (p / path).is_dir():
      shutil.rmtree(p / path)
      log = job_log(p, Path(path).parent.name)
      log.unlink()
    else:
      (p / path).unlink()
  return p


def assert_same_run(p: Path, clean: Path, expansion: str, rebuilt_after: float | None = None):
  """The run of `expansion` is what the clean run left: the same table and
  checkpoints (parameters bit for bit), no other file under an output's name
  (a killed write leaves at most a hidden .tmp), every output complete, and,
  with `rebuilt_after`, written after that time."""
  run = RUN[expansion]
  pd.testing.assert_frame_equal(
      pd.read_parquet(p / TABLE[expansion]), pd.read_parquet(clean / TABLE[expansion])
  )
  for name in OUTPUTS - {"log.parquet"}:
    _, got, _ = checkpoints.load_checkpoint(p / run / name)
    _, want, _ = checkpoints.load_checkpoint(clean / run / name)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  assert {f.name for f in (p / run).iterdir() if not f.name.startswith(".")} == OUTPUTS
  assert all(f.name.endswith(".tmp") for f in (p / run).iterdir() if f.name.startswith("."))
  if rebuilt_after is not None:
    for name in OUTPUTS:
      assert (p / run / name).stat().st_mtime > rebuilt_after
  # Results get the permissions of any file written under the umask, not
  # mkstemp's private 0600 (others on a cluster must read them).
  umask = os.umask(0o022)
  os.umask(umask)
  assert stat.S_IMODE((p / TABLE[expansion]).stat().st_mode) == 0o666 & ~umask


def resume(p: Path, *targets, forced: bool = False) -> str:
  """The README's command after an interruption: it runs without
  IncompleteFilesException or LockException and leaves no lock and no owner
  record. Returns its output.

  Without `forced`, no job runs for outputs marked incomplete ("Forced
  execution"): the stopped jobs' outputs were removed, the others are kept."""
  out = ok(snakemake(p, *targets))
  assert "IncompleteFilesException" not in out and "LockException" not in out
  assert forced or "Forced execution" not in out, out
  assert not locks(p) and not list((p / ".snakemake" / "owners").iterdir())
  return out


def send_sigint(proc):
  snakemake_process(proc).send_signal(signal.SIGINT)


def send_sigterm(proc):
  snakemake_process(proc).send_signal(signal.SIGTERM)


@pytest.mark.parametrize(
    "send, name",
    [
        (send_sigint, "SIGINT"),  # kill -INT <pid>, as a script or batch system sends it
        (send_sigterm, "SIGTERM"),  # kill <pid>
        (ctrl_c, "SIGINT"),  # Ctrl-C in the terminal: every process of the group
    ],
    ids=["sigint-to-snakemake", "sigterm-to-snakemake", "ctrl-c-to-the-group"],
)
def test_a_signal_stops_the_running_job_and_the_same_command_redoes_only_it(
    clean, tmp_path, send, name
):
  # Two jobs: a short one (the barrier sets at t = 0), complete when the
  # signal comes, and x2's training, mid-way.
  p = copy_without(clean, tmp_path, RUN["x2"], INITIAL)
  targets = (TABLE["x2"], INITIAL)
  proc = start(p, *targets)
  wait_until(
      p,
      proc,
      "x2 trained past epoch 20 with the barrier sets done",
      lambda: trained_past_20(p, "x2")
      and re.search(r"^1 of 2 steps", (p / "run.out").read_text(), re.M),
  )
  initial = (p / INITIAL).stat().st_mtime
  assert (p / RUN["x2"] / "epoch0020.msgpack").exists()
  sent = time.time()
  send(proc)
  code = proc.wait(timeout=60)
  exited = time.time() - sent
  out = (p / "run.out").read_text()
  print(f"{name}: snakemake exited {exited:.1f} s after the signal")
  assert exited < EXIT_WITHIN, out
  assert code not in (0, 124, 137), out  # failed, not timed out
  assert not jobs(p)  # The job was stopped, not left running.
  # The failure says which signal, which job and what becomes of its outputs.
  assert f"{name} received" in out
  error = out.split("Error in rule train_candidate", 1)[1].split("\n\n", 1)[0]
  assert re.search(
      rf"message: train_candidate \(.*expansion=x2.*\) was stopped by {name} "
      r"\(.*\); the outputs it wrote are removed and rebuilt by the next run of "
      "the same command",
      error,
  ), error
  assert "Removing output files of failed job train_candidate" in out
  assert not (p / RUN["x2"] / "epoch0020.msgpack").exists()  # never used as if complete

  out = resume(p, *targets)
  assert job_stats(out) == {"train_candidate": 1}, out  # the stopped job only
  assert_same_run(p, clean, "x2", rebuilt_after=sent)
  assert (p / INITIAL).stat().st_mtime == initial  # the completed job's output is kept
  pd.testing.assert_frame_equal(pd.read_parquet(p / INITIAL), pd.read_parquet(clean / INITIAL))


@pytest.mark.slow  # test_sigkill_..._keeps_an_orphan_that_finished... covers it too
def test_sigkill_of_snakemake_orphans_its_job_and_the_same_command_stops_and_redoes_it(
    clean, tmp_path
):
  p = copy_without(clean, tmp_path, RUN["x2"])
  proc = start(p, TABLE["x2"])
  wait_until(p, proc, "x2 trained past epoch 20", lambda: trained_past_20(p, "x2"))
  orphans = jobs(p)
  # The job got the workflow's JAX settings although this process lacks them:
  # no GPU preallocation, and one CPU thread, as Snakemake counts a job.
  assert orphans and all(
      o.environ().get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false"
      and o.environ().get("PJRT_NPROC") == "1"
      and xla_threads(o.pid) == 1
      for o in orphans.values()
  )
  # SIGKILL to Snakemake alone (`kill -9 <pid>`, a lost session): its job
  # is orphaned and keeps training; the lock and incomplete markers stay.
  killed = snakemake_process(proc)
  killed.kill()
  assert proc.wait(timeout=60) in (-signal.SIGKILL, 128 + signal.SIGKILL)  # timeout passes it on
  interrupted_at = time.time()
  assert all(running(pid) for pid in orphans) and locks(p)
  saved = sorted((p / RUN["x2"]).glob("epoch*.msgpack"))
  assert [f.name for f in saved] == ["epoch0020.msgpack"]
  checkpoints.load_checkpoint(
      saved[0]
  )  # Written atomically: what has an output's name is complete.
  # A dry run says what the next run will do, and does nothing.
  out = ok(snakemake(p, "-n", TABLE["x2"]))
  assert f"local snakemake pid {killed.pid} on " in out and "dry run" in out
  assert all(running(pid) for pid in orphans) and locks(p)
  # The README's command again: it stops the orphan, removes the stale lock,
  # rebuilds the incomplete outputs and finishes; no --unlock, no flags.
  started = time.time()
  out = ok(snakemake(p, TABLE["x2"]))
  assert time.time() - started < 120
  (line,) = [l for l in out.splitlines() if "Recovering from an interrupted run" in l]
  assert f"local snakemake pid {killed.pid} on " in line
  assert all(str(pid) in line for pid in orphans) and "removed its stale lock" in line
  assert "kept the outputs" not in line  # stopped half-way: nothing of it is kept
  assert not any(running(pid) for pid in orphans)
  assert job_stats(out) == {"train_candidate": 1}, out
  assert "IncompleteFilesException" not in out and "LockException" not in out
  assert not locks(p) and not list((p / ".snakemake" / "owners").iterdir())
  assert_same_run(p, clean, "x2", rebuilt_after=interrupted_at)


def test_sigkill_of_snakemake_keeps_an_orphan_that_finished_and_redoes_one_that_did_not(
    clean, tmp_path
):
  p = copy_without(clean, tmp_path, RUN["x2"], RUN["x3"])
  targets = (TABLE["x2"], TABLE["x3"])
  proc = start(p, *targets)
  wait_until(
      p,
      proc,
      "both trained past epoch 20",
      lambda: trained_past_20(p, "x2") and trained_past_20(p, "x3"),
  )
  # The jobs got the workflow's JAX setting although this process lacks it.
  assert all(j.environ().get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false" for j in jobs(p).values())
  # x3's job is frozen (SIGSTOP): whatever the timing, it has not finished
  # when the next run starts; x2's runs to its end as an orphan.
  frozen = job_of(p, "x3")
  frozen.suspend()
  finishing = job_of(p, "x2")
  # SIGKILL to Snakemake alone (`kill -9 <pid>`, a lost session): its jobs
  # are orphaned and keep running; the lock and incomplete markers stay.
  killed = snakemake_process(proc)
  killed.kill()
  assert proc.wait(timeout=60) in (-signal.SIGKILL, 128 + signal.SIGKILL)  # timeout passes it on
  assert running(frozen.pid) and running(finishing.pid) and locks(p)
  saved = sorted((p / RUN["x3"]).glob("epoch*.msgpack"))
  assert [f.name for f in saved] == ["epoch0020.msgpack"]
  checkpoints.load_checkpoint(
      saved[0]
  )  # Written atomically: what has an output's name is complete.
  deadline = time.time() + 120
  while running(finishing.pid):
    assert time.time() < deadline, "x2's orphan did not finish"
    time.sleep(0.1)
  finished_at = time.time()
  assert {f.name for f in (p / RUN["x2"]).iterdir() if not f.name.startswith(".")} == OUTPUTS
  x2_files = {n: (p / RUN["x2"] / n).stat().st_mtime for n in OUTPUTS}

  # A dry run says what the next run will do (x2's outputs are kept), and
  # changes nothing.
  out = ok(snakemake(p, "-n", *targets))
  assert f"local snakemake pid {killed.pid} on " in out and "dry run" in out
  assert re.search(
      r"keeps the outputs of the jobs that finished after it was killed "
      r"\(train_candidate \([^)]*expansion=x2",
      out,
  ), out
  assert running(frozen.pid) and locks(p)

  # The README's command again, no --unlock, no flags: it stops x3's orphan,
  # keeps x2's outputs, removes the stale lock and rebuilds x3's run (its
  # outputs are marked incomplete: "Forced execution").
  out = resume(p, *targets, forced=True)
  (line,) = [l for l in out.splitlines() if "Recovering from an interrupted run" in l]
  assert f"local snakemake pid {killed.pid} on " in line and str(frozen.pid) in line
  assert "removed its stale lock" in line
  assert re.search(
      r"kept the outputs of the jobs that finished after it was killed "
      r"\(train_candidate \([^)]*expansion=x2[^)]*\)\)",
      line,
  ), line
  assert not running(frozen.pid)
  assert job_stats(out) == {"train_candidate": 1}, out  # x3's, stopped by the recovery
  assert_same_run(p, clean, "x2")
  assert {n: (p / RUN["x2"] / n).stat().st_mtime for n in OUTPUTS} == x2_files  # kept
  assert_same_run(p, clean, "x3", rebuilt_after=finished_at)


def test_concurrent_run_is_refused_while_the_first_runs(clean, tmp_path):
  p = copy_without(clean, tmp_path, RUN["x2"])
  proc = start(p, TABLE["x2"])
  try:
    wait_until(
        p,
        proc,
        "x2 training",
        lambda: (log := job_log(p, "x2"))
        and re.search(r"epoch \d+/3000", log.read_text(errors="replace")),
    )
    first = jobs(p)
    second = snakemake(p, TABLE["x2"])
    out = second.stdout
    assert second.returncode not in (0, 124, 137), out
    # Refused by Snakemake's lock, which the recovery leaves alone: its owner runs.
    assert "LockException" in out and "may belong to a run in progress" in out
    assert "Recovering" not in out
    assert proc.poll() is None and first and all(running(pid) for pid in first)
    assert locks(p) and len(list((p / ".snakemake" / "owners").glob("*.json"))) == 1
  finally:
    ctrl_c(proc)
    proc.wait(timeout=120)
