"""The default study's wall time, job-seconds and start-up share, from a
finished run's Snakemake log.

  .venv/bin/python benchmarks/study_time.py <project> [--out result.json]

<project> is a directory where `snakemake --cores 2` ran the study (e.g. a
fresh clone after the README's first command). Job-seconds are the sum over
jobs of the time from a job's start to its end as the log stamps them (to the
second). Start-up is measured here, in fresh processes of this interpreter:
the imports of a job that runs a model (Python, JAX, Flax, Optax and the
package, as train_candidate.py imports them), of one that prepares data
(the package's readers), of one that reads and writes tables (pandas,
pyarrow, SciPy and the package's table modules, the most any such script
imports) and of one that draws (pandas, pyarrow, matplotlib, SciPy), each times
the number of such jobs. Run it with the interpreter of the project's
environment, on an idle machine: the figures of a loaded one are not
comparable.
"""

import argparse
import datetime
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

IMPORTS = {
    "model": "import jax, flax, optax; from manifold_metric import checkpoints, expansion, "
    "tables, tracks, train",
    "data": "from manifold_metric import data, text",
    "table": "import pandas, pyarrow.parquet, scipy.stats; from manifold_metric import "
    "correlation, files, gain, metric, ranking, tables",
    # scipy.stats: the figures of correlations import it when they summarize.
    "figure": "import pandas, pyarrow.parquet, matplotlib.pyplot, scipy.stats; from "
    "manifold_metric import plots, tables",
}
# Rules by what their scripts import: data preparation (the package's
# readers; text.py imports JAX), tables (no JAX), figures (matplotlib).
DATA_RULES = {"build_vocab", "prepare_dataset"}
TABLE_RULES = {
    "metrics",
    "scratch_metrics",
    "correlations",
    "correlation_summary",
    "ranking",
    "ranking_outcome",
}
FIGURE_RULES = {f"figure{i}" for i in range(1, 13)}


def kind(rule: str) -> str:
  """Which of IMPORTS a rule's script pays."""
  for name, rules in (("data", DATA_RULES), ("table", TABLE_RULES), ("figure", FIGURE_RULES)):
    if rule in rules:
      return name
  return "model"


def jobs(log: str) -> list[tuple[str, float]]:
  """(rule, seconds) of every finished job of a Snakemake log."""
  started, out, stamp, rule = {}, [], None, None
  for line in log.splitlines():
    if m := re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
      stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
    elif m := re.match(r"(?:local)?rule (\w+):", line):
      rule = m.group(1)
    elif (m := re.match(r"\s+jobid: (\d+)", line)) and rule:
      started[m.group(1)] = (rule, stamp)
      rule = None
    elif (m := re.search(r"Finished jobid: (\d+)", line)) and m.group(1) in started:
      r, t = started.pop(m.group(1))
      out.append((r, (stamp - t).total_seconds()))
  return out


def import_seconds(code: str, repeats: int = 3) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("project")
  parser.add_argument("--out", default=None)
  parser.add_argument(
      "--model-imports",
      default=IMPORTS["model"],
      help="what a model job imports (another version of the package: its own)",
  )
  for k in ("data", "table", "figure"):
    parser.add_argument(f"--{k}-imports", default=IMPORTS[k])
  args = parser.parse_args()
  logs = sorted(glob.glob(os.path.join(args.project, ".snakemake", "log", "*.snakemake.log")))
  if not logs:
    parser.error(f"no Snakemake log under {args.project}/.snakemake/log")
  text = open(logs[-1]).read()
  done = [j for j in jobs(text) if j[0] != "all"]
  wall = re.findall(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", text)
  parse = lambda s: datetime.datetime.strptime(s, "%a %b %d %H:%M:%S %Y")
  wall = (parse(wall[-1]) - parse(wall[0])).total_seconds()
  per_rule = {}
  for rule, seconds in done:
    per_rule.setdefault(rule, []).append(seconds)
  imports = {k: getattr(args, f"{k}_imports") for k in IMPORTS}
  startup = {k: import_seconds(code) for k, code in imports.items()}
  count = {k: sum(len(v) for r, v in per_rule.items() if kind(r) == k) for k in IMPORTS}
  job_seconds = sum(s for _, s in done)
  start_total = sum(count[k] * startup[k] for k in IMPORTS)
  result = {
      "log": logs[-1],
      "wall_s": wall,
      "jobs": len(done),
      "job_seconds": job_seconds,
      "jobs_by_imports": count,
      "import_s": startup,
      "startup_s": start_total,
      "startup_share": start_total / job_seconds,
      "per_rule": {r: {"jobs": len(v), "seconds": sum(v)} for r, v in per_rule.items()},
  }
  print(
      f"{result['jobs']} jobs, {wall:.0f} s wall (first to last log stamp), "
      f"{job_seconds:.0f} job-seconds"
  )
  print(
      "start-up: "
      + ", ".join(f"{startup[k]:.2f} s x {count[k]} {k} jobs" for k in IMPORTS)
      + f" = {start_total:.0f} s, {100 * result['startup_share']:.1f}% of the job-seconds"
  )
  for rule, v in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
    print(f"  {rule:24s} {len(v):4d} jobs {sum(v):7.0f} s")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
