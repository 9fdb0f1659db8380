"""Who holds Snakemake's locks, and recovery from a killed `snakemake`.

Snakemake's lock files (.snakemake/locks/N.{input,output}.lock) list files but
not their owner, so after `kill -9` a new run cannot tell a stale lock from a
live run's. Every executing run therefore records its owner at parse time in
.snakemake/owners/<host>.<pid>.json (pid, host, the process's start time,
executor, profile, log file) and removes the record at exit. A later run
(`recover`) decides from these records:

- an owner that runs on this host (same pid and start time, so not a reused
  pid), a record of another host (a shared file system: its liveness cannot
  be checked from here) or a running `snakemake` in this directory that left
  no record: a live run may hold the locks; nothing is touched (Snakemake
  refuses an overlapping run with its LockException, as before);
- only owners of this host that are dead, all local: their orphaned jobs
  (processes whose command line holds <project>/.snakemake/scripts/, and
  their children) get SIGTERM, then SIGKILL after a grace period; the lock
  files are removed (what `snakemake --unlock` does) and one line says so;
- a dead Slurm (or other remote) owner: its jobs may still be queued or
  running in the cluster, out of reach from here; the locks are kept and one
  line says what to do (`scancel --name <run id>`, then `--unlock`);
- lock files but no record at all (an older version of the workflow, or the
  Python API): the owner is unknown, so the locks are kept (Snakemake then
  stops with its LockException and names `--unlock`): removing a live run's
  lock would let two runs write the same outputs, while keeping a stale one
  costs one command.

Only executing runs act; dry runs (-n), --dag, --summary and the like only say
what the next run will do, and record nothing (they take no locks). An
explicit `snakemake --unlock` also stops a dead local owner's orphans and
forgets the records of owners that are not running here (dead, or of another
host): whoever unlocks declares that no run is live. Only the process the user
started does any of this (workflow.is_main_process in recovery.smk): jobs that
parse the Snakefile again (`--mode remote` on Slurm's nodes, `--mode
subprocess`) neither record nor recover.

Processes are looked up with psutil. Snakemake is imported only to parse the
command line (cli_args); the other functions take paths and plain values, so
they can be tested alone (tests/test_recovery.py).
"""

import contextlib
import io
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import psutil

OWNERS = Path(".snakemake") / "owners"
LOCKS = Path(".snakemake") / "locks"
LOCK_NAME = re.compile(r"\d+\.(input|output)\.lock")
LOCAL_EXECUTORS = ("local", "touch")
# Command-line options (argparse destinations) under which `snakemake` only
# inspects or reports and never runs jobs nor takes locks; --unlock is apart.
INSPECTING = ("dryrun", "lint", "list_target_rules", "list_rules", "print_compilation",
              "containerize", "generate_unit_tests", "dag", "rulegraph", "filegraph",
              "d3dag", "cleanup_metadata", "conda_cleanup_envs", "conda_create_envs_only",
              "list_conda_envs", "cleanup_shadow", "container_cleanup_images", "list_changes",
              "list_input_changes", "list_params_changes", "list_untracked", "summary",
              "detailed_summary", "archive", "delete_all_output", "delete_temp_output")


def cli_args(argv: list[str] | None = None):
  """The options of the running `snakemake` command, as Snakemake parses them.

  Parses `argv` (default: sys.argv) with Snakemake's own command-line parser,
  profiles included (snakemake.cli.parse_args, the parser of Snakemake's CLI
  reference), so an executor or a dry run set in a profile counts too.

  Args:
    argv: the command line, program name first.

  Returns:
    The argparse namespace, or None when this process is not the `snakemake`
    command (the Python API) or its command line does not parse.
  """
  argv = sys.argv if argv is None else argv
  program = Path(argv[0]) if argv else Path()
  if not (program.name == "snakemake" or
          (program.name == "__main__.py" and program.parent.name == "snakemake")):
    return None
  from snakemake import cli  # Here: the rest of this module runs without Snakemake.
  try:
    # Snakemake has parsed this command line already and said which profiles it
    # uses; said twice, the line would only be noise.
    with contextlib.redirect_stderr(io.StringIO()):
      return cli.parse_args(argv[1:])[1]
  except (Exception, SystemExit):
    return None


def executor(args) -> str:
  """The executor plugin's name ('local' unless chosen), 'unknown' under the API."""
  return "unknown" if args is None else getattr(args, "executor", None) or "local"


def run_mode(args) -> str:
  """What the command does, from its options (cli_args).

  Args:
    args: the namespace of cli_args, or None.

  Returns:
    'execute' (runs jobs, takes locks), 'unlock', 'dry run', 'inspect'
    (--dag, --summary, a report, ...) or 'unknown' (no command line: the API).
  """
  if args is None:
    return "unknown"
  if getattr(args, "dryrun", False):
    return "dry run"
  report = getattr(args, "reporter", None) or getattr(args, "report", None)
  if any(getattr(args, name, None) for name in INSPECTING) or (
      report and not getattr(args, "report_after_run", False)):
    return "inspect"
  return "unlock" if getattr(args, "unlock", False) else "execute"


def _created(pid: int) -> float | None:
  """The process's start time (seconds since the epoch), None if it is gone."""
  try:
    return psutil.Process(pid).create_time()
  except psutil.Error:
    return None


def alive(pid: int, created: float | None = None) -> bool:
  """Whether the process runs (zombies do not).

  Args:
    pid: the process id.
    created: its start time as recorded (psutil's create_time); given, the
      process must be that one, not a later process with the same pid.

  Returns:
    True if it runs.
  """
  try:
    proc = psutil.Process(pid)
    if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
      return False
    # Start times are computed from the boot time, which may be off by a
    # fraction of a second between readings; a pid reused within a second is
    # not a case to design for.
    return created is None or abs(proc.create_time() - created) < 1.0
  except psutil.NoSuchProcess:
    return False
  except psutil.AccessDenied:  # another user's: it exists
    return True


def record_owner(project: Path, executor: str, profile=(), logfiles=()) -> Path:
  """Records this process as an owner of Snakemake's locks in `project`."""
  pid = os.getpid()
  record = {"pid": pid, "host": socket.gethostname(), "created": _created(pid),
            "executor": executor, "profile": [str(p) for p in profile or ()],
            "logfiles": [str(f) for f in logfiles], "argv": sys.argv, "time": time.time()}
  owners = Path(project) / OWNERS
  owners.mkdir(parents=True, exist_ok=True)
  path = owners / f"{record['host']}.{pid}.json"
  tmp = owners / f".{path.name}.tmp"
  tmp.write_text(json.dumps(record))
  os.replace(tmp, path)
  return path


def remove_record(path: Path, pid: int) -> None:
  """At exit of the owner (not of a forked child): its record goes."""
  if os.getpid() == pid:
    Path(path).unlink(missing_ok=True)


def read_records(project: Path) -> list[dict]:
  records = []
  for path in sorted((Path(project) / OWNERS).glob("*.json")):
    try:
      records.append({**json.loads(path.read_text()), "path": path})
    except (OSError, ValueError):
      pass  # removed meanwhile, or half-written by a run killed right then
  return records


def lock_files(project: Path) -> list[Path]:
  locks = Path(project) / LOCKS
  return sorted(p for p in locks.iterdir() if LOCK_NAME.fullmatch(p.name)) if locks.is_dir() else []


def _looks_like_main_snakemake(argv: list[str]) -> bool:
  """A `snakemake` command that schedules (not a job's `--mode subprocess` or
  `--mode remote`, not a dry run)."""
  named = any(os.path.basename(a) == "snakemake" for a in argv[:2]) or any(
      a == "-m" and b == "snakemake" for a, b in zip(argv, argv[1:]))
  dry = any(a in ("--dry-run", "--dryrun") or re.fullmatch(r"-[A-Za-z]*n[A-Za-z]*", a)
            for a in argv)
  job = any(a == "--mode" and b in ("subprocess", "remote") for a, b in zip(argv, argv[1:]))
  return named and not dry and not job


def unrecorded_snakemakes(project: Path, recorded: set[int]) -> list[int]:
  """Running `snakemake` processes of this host working in `project` without
  a record (an older version of the workflow), this process aside."""
  project, me, found = os.path.realpath(project), os.getpid(), []
  for proc in psutil.process_iter(["cwd", "cmdline", "status"]):
    info = proc.info  # None where access is denied: another user's process
    if (proc.pid != me and proc.pid not in recorded and info["cwd"] == project and
        info["status"] != psutil.STATUS_ZOMBIE and _looks_like_main_snakemake(info["cmdline"] or [])):
      found.append(proc.pid)
  return found


def _script_markers(project: Path) -> tuple[str, ...]:
  """What a job's command line holds: the project's .snakemake/scripts/, where
  Snakemake writes each job's script (the path as given and resolved)."""
  return tuple({os.path.join(d, ".snakemake", "scripts") + os.sep
                for d in (os.path.abspath(project), os.path.realpath(project))})


def orphans(project: Path) -> list[int]:
  """Job processes of `project` and their descendants.

  Args:
    project: the project directory.

  Returns:
    The pids of the processes whose command line holds the project's
    .snakemake/scripts/ and of their children, never this process or its
    ancestors.
  """
  markers = _script_markers(project)
  found = set()
  for proc in psutil.process_iter(["cmdline", "status"]):
    if proc.info["status"] == psutil.STATUS_ZOMBIE or not any(
        m in a for a in proc.info["cmdline"] or () for m in markers):
      continue
    found.add(proc.pid)
    try:
      found.update(c.pid for c in proc.children(recursive=True))  # e.g. a script's subprocesses
    except psutil.Error:
      pass
  me = psutil.Process()
  return sorted(found - {me.pid} - {p.pid for p in me.parents()})


def stop(pids: list[int], grace: float = 10.0) -> list[int]:
  """Stops processes: SIGTERM, then SIGKILL to those running after `grace` s.

  Args:
    pids: the processes.
    grace: seconds between SIGTERM and SIGKILL.

  Returns:
    The pids still running (another user's, or stuck in the kernel).
  """
  procs, refused = [], []
  for pid in pids:
    try:
      procs.append(psutil.Process(pid))  # keeps the start time: never a reused pid
    except psutil.NoSuchProcess:
      pass

  def send(sig, targets):
    for proc in targets:
      try:
        proc.send_signal(sig)
      except psutil.NoSuchProcess:
        pass
      except psutil.AccessDenied:
        refused.append(proc)

  send(signal.SIGTERM, procs)
  _, running = psutil.wait_procs([p for p in procs if p not in refused], timeout=grace)
  send(signal.SIGKILL, running)
  _, running = psutil.wait_procs(running, timeout=5)
  return sorted(p.pid for p in set(refused) | set(running) if alive(p.pid, p.create_time()))


def slurm_run_id(record: dict) -> str | None:
  """The Slurm run ID (every job's name) that the owner's log printed at start."""
  for logfile in record.get("logfiles", []):
    try:
      m = re.search(r"SLURM run ID: (\S+)", Path(logfile).read_text(errors="replace"))
    except OSError:
      continue
    if m:
      return m.group(1)
  return None


def _who(r: dict) -> str:
  return f"{r.get('executor')} snakemake pid {r['pid']} on {r['host']}"


def recover(project: Path, mode: str, log=print, grace: float = 10.0) -> None:
  """Decides whether Snakemake's locks in `project` are stale and, with mode
  'execute' or 'unlock', acts on it (see the module's docstring); otherwise
  only says what it would do. Messages (one line each) go to `log`."""
  project = Path(project)
  host, me = socket.gethostname(), os.getpid()
  records = [r for r in read_records(project) if not (r["host"] == host and r["pid"] == me)]
  locks = lock_files(project)
  acting = mode in ("execute", "unlock")
  # A record without a start time (an older version of this workflow): a
  # running pid counts as its owner, lest a live run's lock be removed.
  live = [r for r in records if r["host"] == host and alive(r["pid"], r.get("created"))]
  foreign = [r for r in records if r["host"] != host]
  dead = [r for r in records if r["host"] == host and r not in live]
  unrecorded = unrecorded_snakemakes(project, {r["pid"] for r in live})
  if live or unrecorded or (foreign and mode != "unlock"):
    if locks:
      holders = [_who(r) for r in live + foreign] + [f"snakemake pid {p}" for p in unrecorded]
      log(f"Snakemake's locks in {LOCKS} may belong to a run in progress ({'; '.join(holders)}): "
          "they are kept; a run that needs the same files is refused.")
    return
  if mode == "unlock":  # The user declares that no run is live: foreign records go too.
    for r in foreign:
      Path(r["path"]).unlink(missing_ok=True)
  if not dead:
    if locks and mode != "unlock":
      log(f"Snakemake's locks in {LOCKS} have no recorded owner (left by an older version of "
          "this workflow?): they are kept. If no snakemake runs in this directory on any "
          "host, remove them with `snakemake --unlock`.")
    return
  local = [r for r in dead if r.get("executor") in LOCAL_EXECUTORS]
  remote = [r for r in dead if r not in local]
  jobs = orphans(project) if local else []
  who = ", ".join(_who(r) for r in local)
  if not acting:  # A dry run, --dag, ...: says what the next run will do.
    if jobs or (locks and not remote):
      log(f"{who} was killed; nothing is changed now ({mode}): the next run stops its "
          f"orphaned job processes (pids {' '.join(map(str, jobs)) or 'none'})"
          + (" and removes its stale lock." if locks and not remote else "."))
  else:
    stuck = stop(jobs, grace) if jobs else []
    if stuck:
      log(f"{who} was killed, but its orphaned job processes {' '.join(map(str, stuck))} "
          "could not be stopped (another user's?): the lock is kept. Stop them, then run "
          "`snakemake --unlock`.")
      return
    done = []
    if jobs:
      done.append(f"stopped its orphaned job processes (pids {' '.join(map(str, jobs))})")
    if locks and not remote and mode == "execute":
      for path in locks:
        path.unlink(missing_ok=True)
      done.append(f"removed its stale lock ({LOCKS}, as `snakemake --unlock` does)")
    if done:
      log(f"Recovering from an interrupted run: {who} is no longer running; "
          + " and ".join(done) + ".")
    for r in local:
      Path(r["path"]).unlink(missing_ok=True)
  for r in remote:
    run_id = slurm_run_id(r)
    if mode == "unlock":
      Path(r["path"]).unlink(missing_ok=True)
      continue
    profile = "".join(f" --profile {p}" for p in r.get("profile", []))
    cancel = (f"`scancel --name {run_id}`" if run_id else
              "`scancel --name <SLURM run ID printed at its start>`"
              if r.get("executor") == "slurm" else "its executor's cancel command")
    if locks:
      log(f"{_who(r)} is no longer running, but its jobs may still be queued or running "
          f"in the cluster: the lock is kept. Cancel them with {cancel}, then `snakemake{profile} --unlock`, "
          "then start again.")
    else:  # Unlocked meanwhile: say once what may still be running.
      log(f"{_who(r)} was killed; if its jobs are still queued or running, cancel them with "
          f"{cancel}.")
      if acting:
        Path(r["path"]).unlink(missing_ok=True)
