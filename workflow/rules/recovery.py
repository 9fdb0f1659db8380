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

No Snakemake import: the functions take paths and plain values, so they can be
tested alone (tests/test_faults.py).
"""

import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

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


def cli_args():
  """The options of the running `snakemake` command (the argparse namespace of
  snakemake.cli.args_to_api, which parses the Snakefile), None under the API."""
  frame = sys._getframe(1)
  while frame is not None:
    if (frame.f_code.co_name == "args_to_api" and
        frame.f_globals.get("__name__") == "snakemake.cli"):
      return frame.f_locals.get("args")
    frame = frame.f_back
  return None


def run_mode(args) -> str:
  """'execute' (runs jobs, takes locks), 'unlock', 'dry run', 'inspect'
  (--dag, --summary, ...) or 'unknown' (no command line: the Python API)."""
  if args is None:
    return "unknown"
  if getattr(args, "dryrun", False):
    return "dry run"
  if any(getattr(args, name, None) for name in INSPECTING) or (
      getattr(args, "reporter", None) and not getattr(args, "report_after_run", False)):
    return "inspect"
  return "unlock" if getattr(args, "unlock", False) else "execute"


def _stat(pid: int):
  """(state, ppid, start time in clock ticks since boot) of a process, or None."""
  try:
    text = Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return None
  fields = text[text.rindex(")") + 2:].split()
  return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str]:
  try:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
  except OSError:
    return []


def _pids() -> list[int]:
  return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def alive(pid: int, start: int | None = None) -> bool:
  """Whether the process runs (zombies do not); with `start`, whether it is
  still the process that started then (not a reused pid)."""
  if not Path("/proc").is_dir():  # no procfs: the pid alone
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      pass
    return True
  stat = _stat(pid)
  return stat is not None and stat[0] not in "ZX" and (start is None or stat[2] == start)


def record_owner(project: Path, executor: str, profile=(), logfiles=()) -> Path:
  """Records this process as an owner of Snakemake's locks in `project`."""
  pid = os.getpid()
  stat = _stat(pid)
  record = {"pid": pid, "host": socket.gethostname(), "start": stat and stat[2],
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
  if not Path("/proc").is_dir():
    return []
  project, me, found = os.path.realpath(project), os.getpid(), []
  for pid in _pids():
    if pid == me or pid in recorded:
      continue
    try:
      cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
      continue  # gone, or another user's
    if cwd == project and alive(pid) and _looks_like_main_snakemake(_cmdline(pid)):
      found.append(pid)
  return found


def orphans(project: Path) -> list[int]:
  """Job processes of this project (their command line holds the project's
  .snakemake/scripts/, where Snakemake writes each job's script) and their
  descendants; never this process or its ancestors."""
  if not Path("/proc").is_dir():
    return []
  marker = os.path.join(os.path.realpath(project), ".snakemake", "scripts") + os.sep
  parents = {}
  for pid in _pids():
    stat = _stat(pid)
    if stat and stat[0] not in "ZX":
      parents[pid] = stat[1]
  found = {pid for pid in parents if any(marker in a for a in _cmdline(pid))}
  grew = True
  while grew:  # the jobs' children (e.g. a script's subprocesses)
    more = {pid for pid, ppid in parents.items() if ppid in found} - found
    found |= more
    grew = bool(more)
  mine, pid = set(), os.getpid()
  while pid > 1 and pid not in mine:
    mine.add(pid)
    pid = parents.get(pid, 0)
  return sorted(found - mine)


def stop(pids: list[int], grace: float = 10.0) -> list[int]:
  """SIGTERM, then SIGKILL to those still running after `grace` seconds.
  Returns the pids still running (another user's, or stuck in the kernel)."""
  def send(sig, targets):
    refused = []
    for pid in targets:
      try:
        os.kill(pid, sig)
      except ProcessLookupError:
        pass
      except PermissionError:
        refused.append(pid)
    return refused

  starts = {pid: (_stat(pid) or (0, 0, None))[2] for pid in pids}
  refused = send(signal.SIGTERM, pids)
  deadline = time.time() + grace
  running = [p for p in pids if p not in refused and alive(p, starts[p])]
  while running and time.time() < deadline:
    time.sleep(0.1)
    running = [p for p in running if alive(p, starts[p])]
  refused += send(signal.SIGKILL, running)
  deadline = time.time() + 5
  while time.time() < deadline and any(alive(p, starts[p]) for p in running):
    time.sleep(0.05)
  return sorted(p for p in set(refused) | set(running) if alive(p, starts[p]))


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
  live = [r for r in records if r["host"] == host and alive(r["pid"], r.get("start"))]
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
