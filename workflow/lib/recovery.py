"""Interrupted runs: stopping a run's jobs on a signal, and recovery from a
killed `snakemake`.

SIGINT or SIGTERM to a local run (Ctrl-C, `kill`, a batch system): see
Interrupts. The run stops its jobs within seconds and exits; Snakemake
processes the end of every job, so completed jobs are kept and the stopped
ones' outputs removed: the same command redoes exactly the stopped jobs.

`kill -9` (or a lost session): Snakemake's lock files
(.snakemake/locks/N.{input,output}.lock) list files but not their owner, so a
new run cannot tell a stale lock from a live run's. Every executing run
therefore records its owner at parse time in .snakemake/owners/<host>.<pid>.json
(pid, host, the process's start time, executor, profile, log file), and its
jobs as they start and end in <host>.<pid>.jobs.jsonl beside it (local runs),
and removes both at exit. A later run (`recover`) decides from these records:

- an owner that runs on this host (same pid and start time, so not a reused
  pid), a record of another host (a shared file system: its liveness cannot
  be checked from here) or a running `snakemake` in this directory that left
  no record: a live run may hold the locks; nothing is touched (Snakemake
  refuses an overlapping run with its LockException, as before);
- only owners of this host that are dead, all local: their orphaned jobs
  (processes whose command line holds <project>/.snakemake/scripts/, and
  their children) get SIGTERM, then SIGKILL after a grace period; the jobs
  that had written all their outputs (finished_jobs: those that finished as
  orphans) lose Snakemake's incomplete marks, which would have them redone
  ("Forced execution"), so their outputs are kept, while the stopped ones are
  rebuilt (rerun-incomplete); the lock files are removed (what `snakemake
  --unlock` does) and one line says so;
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

import _thread
import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil

OWNERS = Path(".snakemake") / "owners"
LOCKS = Path(".snakemake") / "locks"
INCOMPLETE = Path(".snakemake") / "incomplete"
LOCK_NAME = re.compile(r"\d+\.(input|output)\.lock")
LOCAL_EXECUTORS = ("local", "touch")
# Command-line options (argparse destinations) under which `snakemake` only
# inspects or reports and never runs jobs nor takes locks; --unlock is apart.
INSPECTING = (
    "dryrun",
    "lint",
    "list_target_rules",
    "list_rules",
    "print_compilation",
    "containerize",
    "generate_unit_tests",
    "dag",
    "rulegraph",
    "filegraph",
    "d3dag",
    "cleanup_metadata",
    "conda_cleanup_envs",
    "conda_create_envs_only",
    "list_conda_envs",
    "cleanup_shadow",
    "container_cleanup_images",
    "list_changes",
    "list_input_changes",
    "list_params_changes",
    "list_untracked",
    "summary",
    "detailed_summary",
    "archive",
    "delete_all_output",
    "delete_temp_output",
)


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
  if not (
      program.name == "snakemake"
      or (program.name == "__main__.py" and program.parent.name == "snakemake")
  ):
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
      report and not getattr(args, "report_after_run", False)
  ):
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
  """Records this process as an owner of Snakemake's locks in `project`.

  Args:
    project: the project directory.
    executor: the executor's name (executor()).
    profile: the --profile values.
    logfiles: Snakemake's log files of this run.

  Returns:
    The record's path, .snakemake/owners/<host>.<pid>.json.
  """
  pid = os.getpid()
  record = {
      "pid": pid,
      "host": socket.gethostname(),
      "created": _created(pid),
      "executor": executor,
      "profile": [str(p) for p in profile or ()],
      "logfiles": [str(f) for f in logfiles],
      "argv": sys.argv,
      "time": time.time(),
  }
  owners = Path(project) / OWNERS
  owners.mkdir(parents=True, exist_ok=True)
  path = owners / f"{record['host']}.{pid}.json"
  tmp = owners / f".{path.name}.tmp"
  tmp.write_text(json.dumps(record))
  os.replace(tmp, path)
  return path


def journal_path(record: Path) -> Path:
  """The job journal beside an owner record: <host>.<pid>.jobs.jsonl."""
  record = Path(record)
  return record.with_name(record.name.removesuffix(".json") + ".jobs.jsonl")


def forget(record: Path) -> None:
  """Removes an owner record and its job journal."""
  Path(record).unlink(missing_ok=True)
  journal_path(record).unlink(missing_ok=True)


def remove_record(path: Path, pid: int) -> None:
  """At exit of the owner (not of a forked child): its record goes.

  Args:
    path: the owner record (record_owner).
    pid: the owner's pid.
  """
  if os.getpid() == pid:
    forget(path)


def read_journal(path: Path) -> list[dict]:
  """The jobs a journal (Interrupts.filter) shows started and not ended.

  Args:
    path: the journal, <host>.<pid>.jobs.jsonl.

  Returns:
    One dict per job: job (Snakemake's jobid), rule, wildcards, output, log
    and time (when Snakemake started it, seconds since the epoch).
  """
  jobs = {}
  try:
    lines = Path(path).read_text().splitlines()
  except OSError:
    return []
  for line in lines:
    try:
      entry = json.loads(line)
    except ValueError:
      continue  # the last line, cut short by a kill
    if "end" in entry:
      jobs.pop(entry["job"], None)
    elif "output" in entry:
      jobs[entry["job"]] = entry
  return list(jobs.values())


def describe(job: dict) -> str:
  """A job as one names it: its rule and wildcards (or outputs)."""
  wildcards = job.get("wildcards") or {}
  what = ", ".join(f"{k}={v}" for k, v in wildcards.items()) or ", ".join(job.get("output", []))
  return f"{job.get('rule')} ({what})"


def incomplete_markers(project: Path) -> dict[str, Path]:
  """Snakemake's marks of outputs whose job did not end under its eyes.

  Snakemake marks every output of a job as incomplete when it starts it
  (.snakemake/incomplete/<the path in urlsafe base64, cut into '@'-prefixed
  directories where longer than a file name may be>) and removes the marks
  when it has processed the job's end. A later run treats marked outputs
  that exist as incomplete: with rerun-incomplete it deletes and rebuilds
  them (its reason: "Forced execution").

  Args:
    project: the project directory.

  Returns:
    The marker file of each marked output, by the output's path.
  """
  root = Path(project) / INCOMPLETE
  found = {}
  for dirpath, _, files in os.walk(root):
    parts = Path(dirpath).relative_to(root).parts
    if not all(d.startswith("@") for d in parts):
      continue
    for name in files:
      try:
        path = base64.urlsafe_b64decode("".join(d[1:] for d in parts) + name).decode()
      except ValueError:  # not a marker (e.g. Snakemake's migration_underway)
        continue
      found[path] = Path(dirpath) / name
  return found


def finished_jobs(project: Path, jobs: list[dict], markers: dict[str, Path]) -> list[dict]:
  """The jobs that wrote all their outputs although Snakemake never saw them end.

  A job counts as finished when each of its outputs exists and is newer than
  the job's start. Sound for this workflow's scripts: each writes an output
  under a temporary name and renames it (a file under an output's name is
  complete), and the last output as its last step; Snakemake deletes a job's
  old outputs before starting it, so an output older than the start is not
  this job's. Outputs that Snakemake annotates (temp, directory, ...) are
  not judged: their job counts as not finished, and is rebuilt.

  Args:
    project: the project directory.
    jobs: jobs of a journal (read_journal).
    markers: incomplete_markers(project).

  Returns:
    Those of `jobs` that finished and still have an output marked incomplete.
  """
  done = []
  for job in jobs:
    outputs = job.get("output") or []
    if (
        not outputs
        or not any(o in markers for o in outputs)
        or any(o.endswith(")") and " (" in o for o in outputs)
    ):
      continue
    try:
      if all((Path(project) / o).stat().st_mtime >= job["time"] for o in outputs):
        done.append(job)
    except OSError:  # a missing output: not finished
      pass
  return done


def unmark(job: dict, markers: dict[str, Path]) -> None:
  """Removes the incomplete marks of a finished job's outputs, as Snakemake
  does when it processes a job's end."""
  for output in job["output"]:
    marker = markers.get(output)
    if marker is not None:
      marker.unlink(missing_ok=True)
      if marker.parent.name.startswith("@"):  # Snakemake's directories for long names
        try:
          os.removedirs(marker.parent)
        except OSError:
          pass


def read_records(project: Path) -> list[dict]:
  """The owner records of `project` (record_owner), each with its `path`."""
  records = []
  for path in sorted((Path(project) / OWNERS).glob("*.json")):
    try:
      records.append({**json.loads(path.read_text()), "path": path})
    except (OSError, ValueError):
      pass  # removed meanwhile, or half-written by a run killed right then
  return records


def lock_files(project: Path) -> list[Path]:
  """Snakemake's lock files in `project`."""
  locks = Path(project) / LOCKS
  return sorted(p for p in locks.iterdir() if LOCK_NAME.fullmatch(p.name)) if locks.is_dir() else []


def _looks_like_main_snakemake(argv: list[str]) -> bool:
  """A `snakemake` command that schedules (not a job's `--mode subprocess` or
  `--mode remote`, not a dry run)."""
  named = any(os.path.basename(a) == "snakemake" for a in argv[:2]) or any(
      a == "-m" and b == "snakemake" for a, b in zip(argv, argv[1:])
  )
  dry = any(
      a in ("--dry-run", "--dryrun") or re.fullmatch(r"-[A-Za-z]*n[A-Za-z]*", a) for a in argv
  )
  job = any(a == "--mode" and b in ("subprocess", "remote") for a, b in zip(argv, argv[1:]))
  return named and not dry and not job


def unrecorded_snakemakes(project: Path, recorded: set[int]) -> list[int]:
  """Running `snakemake` processes of this host working in `project` without
  a record (an older version of the workflow), this process aside."""
  project, me, found = os.path.realpath(project), os.getpid(), []
  for proc in psutil.process_iter(["cwd", "cmdline", "status"]):
    info = proc.info  # None where access is denied: another user's process
    if (
        proc.pid != me
        and proc.pid not in recorded
        and info["cwd"] == project
        and info["status"] != psutil.STATUS_ZOMBIE
        and _looks_like_main_snakemake(info["cmdline"] or [])
    ):
      found.append(proc.pid)
  return found


def _script_markers(project: Path) -> tuple[str, ...]:
  """What a job's command line holds: the project's .snakemake/scripts/, where
  Snakemake writes each job's script (the path as given and resolved)."""
  return tuple(
      {
          os.path.join(d, ".snakemake", "scripts") + os.sep
          for d in (os.path.abspath(project), os.path.realpath(project))
      }
  )


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
        m in a for a in proc.info["cmdline"] or () for m in markers
    ):
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
  send(
      signal.SIGCONT, [p for p in procs if p not in refused]
  )  # a stopped process (Ctrl-Z) acts on it now
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
  """Recovers `project` from a killed run, if its owner records show one.

  Decides whether Snakemake's locks are stale and, with mode 'execute' or
  'unlock', acts on it: stops the dead local owners' orphans, keeps the
  outputs of their jobs that finished, removes a stale lock (see the module's
  docstring); in any other mode only says what the next run will do.

  Args:
    project: the project directory.
    mode: run_mode of this command.
    log: where the messages (one line each) go.
    grace: seconds between SIGTERM and SIGKILL to an orphan.
  """
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
      log(
          f"Snakemake's locks in {LOCKS} may belong to a run in progress ({'; '.join(holders)}): "
          "they are kept; a run that needs the same files is refused."
      )
    return
  if mode == "unlock":  # The user declares that no run is live: foreign records go too.
    for r in foreign:
      forget(r["path"])
  if not dead:
    if locks and mode != "unlock":
      log(
          f"Snakemake's locks in {LOCKS} have no recorded owner (left by an older version of "
          "this workflow?): they are kept. If no snakemake runs in this directory on any "
          "host, remove them with `snakemake --unlock`."
      )
    return
  local = [r for r in dead if r.get("executor") in LOCAL_EXECUTORS]
  remote = [r for r in dead if r not in local]
  jobs = orphans(project) if local else []
  who = ", ".join(_who(r) for r in local)
  # Jobs Snakemake started and never saw end: those that finished as orphans
  # keep their outputs (their incomplete marks go); the others are rebuilt.
  started = [j for r in local for j in read_journal(journal_path(r["path"]))]
  if not acting:  # A dry run, --dag, ...: says what the next run will do.
    finished = finished_jobs(project, started, incomplete_markers(project))
    if jobs or finished or (locks and not remote):
      log(
          f"{who} was killed; nothing is changed now ({mode}): the next run stops its "
          f"orphaned job processes (pids {' '.join(map(str, jobs)) or 'none'})"
          + (
              f", keeps the outputs of the jobs that finished after it was killed "
              f"({'; '.join(map(describe, finished))}), which this {mode} still counts as "
              "incomplete,"
              if finished
              else ""
          )
          + (" and removes its stale lock." if locks and not remote else ".")
      )
  else:
    stuck = stop(jobs, grace) if jobs else []
    if stuck:
      log(
          f"{who} was killed, but its orphaned job processes {' '.join(map(str, stuck))} "
          "could not be stopped (another user's?): the lock is kept. Stop them, then run "
          "`snakemake --unlock`."
      )
      return
    # After stop(): a job stopped half-way has outputs missing, so only jobs
    # that are over are judged.
    markers = incomplete_markers(project)
    finished = finished_jobs(project, started, markers)
    for job in finished:
      unmark(job, markers)
    done = []
    if jobs:
      done.append(f"stopped its orphaned job processes (pids {' '.join(map(str, jobs))})")
    if finished:
      done.append(
          f"kept the outputs of the jobs that finished after it was killed "
          f"({'; '.join(map(describe, finished))})"
      )
    if locks and not remote and mode == "execute":
      for path in locks:
        path.unlink(missing_ok=True)
      done.append(f"removed its stale lock ({LOCKS}, as `snakemake --unlock` does)")
    if done:
      log(
          f"Recovering from an interrupted run: {who} is no longer running; "
          + " and ".join(done)
          + "."
      )
    for r in local:
      forget(r["path"])
  for r in remote:
    run_id = slurm_run_id(r)
    if mode == "unlock":
      forget(r["path"])
      continue
    profile = "".join(f" --profile {p}" for p in r.get("profile", []))
    cancel = (
        f"`scancel --name {run_id}`"
        if run_id
        else "`scancel --name <SLURM run ID printed at its start>`"
        if r.get("executor") == "slurm"
        else "its executor's cancel command"
    )
    if locks:
      log(
          f"{_who(r)} is no longer running, but its jobs may still be queued or running "
          f"in the cluster: the lock is kept. Cancel them with {cancel}, "
          f"then `snakemake{profile} --unlock`, "
          "then start again."
      )
    else:  # Unlocked meanwhile: say once what may still be running.
      log(
          f"{_who(r)} was killed; if its jobs are still queued or running, cancel them with "
          f"{cancel}."
      )
      if acting:
        forget(r["path"])


# How each signal usually comes, for the messages.
SENDERS = {"SIGINT": "Ctrl-C, or kill -INT", "SIGTERM": "kill, or a batch system"}


class Interrupts:
  """Stops the jobs of a local run on SIGINT or SIGTERM, within seconds.

  Snakemake alone stops no job on either signal: its Python handlers run only
  when its main thread wakes (when a job ends, since the kernel interrupts
  any thread); after SIGINT it stops without processing the ends of the
  jobs still running, which run on (the next run redoes those that
  completed: "Forced execution"); after SIGTERM it waits for the jobs and
  keeps them. Installed in the main `snakemake` process (recovery.smk),
  this class:

  - learns the running jobs from Snakemake's job events as a filter on its
    logger (the events logger plugins receive), and writes them to a journal
    beside the owner record, which a later run reads after `kill -9`
    (recover, finished_jobs);
  - sees each SIGINT and SIGTERM at once through the signal wakeup fd, read
    by its own thread (whichever thread the kernel interrupts);
  - on the first, hands over to Snakemake's own SIGTERM handler (the
    scheduler's: start no more jobs, wait for the running ones, process
    their ends, exit with an error), then sends SIGTERM to every job process
    (every descendant of this process: a local run starts only jobs),
    SIGKILL after `grace` seconds, until Snakemake exits. Jobs that ended before are
    processed as usual and kept; a stopped job fails, and Snakemake removes
    its outputs (unless --keep-incomplete), so the same command rebuilds
    exactly the stopped jobs. A second signal kills the jobs at once;
  - gives the failure of each stopped job its cause: Snakemake's job error
    says `message: None`, this filter puts the signal, the job and the fate
    of its outputs there.

  Before Snakemake's scheduler exists (while it builds the DAG: no job runs)
  a signal stops Snakemake as Ctrl-C does.

  Args:
    project: the project directory.
    journal: the job journal to append to (journal_path), or None.
    log: where the one-line messages go.
    keep_incomplete: Snakemake's --keep-incomplete: stopped jobs keep their outputs.
    grace: seconds between SIGTERM and SIGKILL to a job process.
  """

  def __init__(
      self,
      project: Path,
      journal: Path | None = None,
      log=print,
      keep_incomplete: bool = False,
      grace: float = 10.0,
  ):
    self.project, self.journal, self.log = Path(project), journal, log
    self.keep_incomplete, self.grace = keep_incomplete, grace
    self.running: dict[int, dict] = {}  # by Snakemake's jobid
    self.signal: str | None = None  # the first signal's name
    self.stopped: dict[int, dict] = {}  # the jobs running then
    self._lock = threading.Lock()
    self._count = 0
    self._wakeup = None

  def install(self, logger) -> None:
    """Watches `logger`'s job events and takes SIGINT and SIGTERM (main thread only).

    Args:
      logger: Snakemake's logger (snakemake.logging.logger).
    """
    logger.addFilter(self)
    self._wakeup = socket.socketpair()
    self._wakeup[1].setblocking(False)  # the C-level handler must never block
    signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, self._in_main)
    threading.Thread(target=self._watch, name="interrupts", daemon=True).start()

  def filter(self, record) -> bool:
    """The logging.Filter interface: notes job events, names a stopped job's cause."""
    event = getattr(getattr(record, "event", None), "name", None)
    if event == "JOB_INFO":
      job = {
          "job": record.jobid,
          "rule": record.rule_name,
          "wildcards": dict(record.wildcards or {}),
          "output": list(record.output or ()),
          "log": list(record.log or ()),
          "time": record.created,
      }
      with self._lock:
        self.running[job["job"]] = job
      self._note(job)
    elif event in ("JOB_FINISHED", "JOB_ERROR"):
      jobid = record.job_id if event == "JOB_FINISHED" else record.jobid
      with self._lock:
        job = self.running.pop(jobid, None)
        stopping = self.signal
      self._note({"job": jobid, "end": event, "time": record.created})
      if event == "JOB_ERROR" and stopping and not getattr(record, "rule_msg", None):
        record.rule_msg = self.message(
            job or {"rule": getattr(record, "rule_name", "?"), "output": list(record.output or ())}
        )
    return True

  def message(self, job: dict) -> str:
    """What the failure of a job stopped by the signal says."""
    outputs = (
        "its outputs are kept (--keep-incomplete); the next run of the same command "
        "rebuilds the job"
        if self.keep_incomplete
        else "the outputs it wrote are removed and rebuilt by the next run of the same " "command"
    )
    return (
        f"{describe(job)} was stopped by {self.signal} ({SENDERS.get(self.signal, '')}); " + outputs
    )

  def _note(self, entry: dict) -> None:
    if self.journal is None:
      return
    try:  # One line per event, appended: a kill leaves at most a cut last line.
      with open(self.journal, "a") as f:
        f.write(json.dumps(entry) + "\n")
    except OSError:
      pass  # bookkeeping only: the run goes on

  def _in_main(self, signum, frame) -> None:
    # Replaces Python's KeyboardInterrupt (and SIGTERM's exit): the watcher
    # acts on each signal. Only if someone replaced the wakeup fd meanwhile
    # (it is restored here) did the watcher miss this one.
    fd = self._wakeup[1].fileno()
    if signal.set_wakeup_fd(fd, warn_on_full_buffer=False) != fd:
      # Not here: this thread may hold the lock _notice takes (in filter).
      threading.Thread(target=self._notice, args=(signum,), daemon=True).start()

  def _watch(self) -> None:
    while True:
      for signum in self._wakeup[0].recv(64):
        if signum in (signal.SIGINT, signal.SIGTERM):
          self._notice(signum)

  def _notice(self, signum: int) -> None:
    name = signal.Signals(signum).name
    with self._lock:
      self._count += 1
      first = self._count == 1
      if first:
        self.signal, self.stopped = name, dict(self.running)
    if first:
      threading.Thread(target=self._stop, name="stop jobs", daemon=True).start()
    else:
      self.log(f"{name} again: killing the running jobs now (SIGKILL).")
      for proc in self._job_processes():
        _send(proc, signal.SIGKILL)

  def _stop(self) -> None:
    jobs = "; ".join(map(describe, self.stopped.values())) or "none"
    self.log(
        f"{self.signal} received ({SENDERS[self.signal]}): stopping the running jobs "
        f"({jobs}), then exiting. Completed jobs are kept; the stopped ones are rebuilt "
        "by the next run of the same command."
    )
    snakemake_term = signal.getsignal(signal.SIGTERM)
    if callable(snakemake_term) and snakemake_term != self._in_main:
      snakemake_term(signal.SIGTERM, None)
    else:  # No scheduler yet: stop as Ctrl-C does.
      _thread.interrupt_main()
    sent = {}  # job process -> when SIGTERM went to it
    while True:  # Until this process exits: a job started in the same instant is stopped too.
      now = time.time()
      for proc in self._job_processes():
        if proc not in sent:
          sent[proc] = now
          _send(proc, signal.SIGTERM)
          _send(proc, signal.SIGCONT)  # a stopped job (Ctrl-Z) acts on it now
        elif now - sent[proc] > self.grace:
          _send(proc, signal.SIGKILL)
      time.sleep(0.2)

  def _job_processes(self) -> list:
    """This run's job processes: every descendant of this process (in a
    local run, Snakemake starts only jobs). Not processes found by their job
    script: another run in this directory may be live, with other outputs."""
    try:
      procs = psutil.Process().children(recursive=True)
    except psutil.Error:
      return []
    return [p for p in procs if _running(p)]


class RemoteTerm:
  """SIGTERM to a run of a remote executor (Slurm) acts as Ctrl-C: its
  submitted jobs are cancelled (`scancel`) and it exits. Snakemake alone
  takes SIGTERM as "submit nothing more, wait for the submitted jobs", which
  on a cluster can take a rule's whole runtime. Installed in the main
  `snakemake` process (recovery.smk): a thread sees SIGTERM at once through
  the signal wakeup fd and sends this process SIGINT, whose KeyboardInterrupt
  makes Snakemake's scheduler cancel every job it submitted."""

  def install(self) -> None:
    """Takes SIGTERM (main thread only)."""
    self._wakeup = socket.socketpair()
    self._wakeup[1].setblocking(False)  # the C-level handler must never block
    signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
    threading.Thread(target=self._watch, name="sigterm", daemon=True).start()

  def _watch(self) -> None:
    while True:
      if signal.SIGTERM in self._wakeup[0].recv(64):
        os.kill(os.getpid(), signal.SIGINT)


def _running(proc) -> bool:
  try:
    return proc.status() != psutil.STATUS_ZOMBIE
  except psutil.Error:
    return False


def _send(proc, sig) -> None:
  try:
    proc.send_signal(sig)
  except psutil.Error:
    pass  # ended meanwhile, or not ours
