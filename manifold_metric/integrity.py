"""Checking a results tree: every checkpoint, table, dataset and vocabulary
under it must load. Snakemake decides what to rebuild from file times, so a
file truncated or edited in place while keeping its time (a copy, a restore,
an editor) passes for complete; `check` reads each one and names those that
do not load."""

import os
import sys

from manifold_metric import checkpoints, data, tables, text
from manifold_metric.files import InputError

READERS = {
    ".msgpack": checkpoints.load_checkpoint,
    ".parquet": tables.read_table,
    ".npz": data.npz_keys,
    ".json": text.load_vocab,
}


def check(root) -> tuple[int, list[str]]:
  """Loads every file under `root` that the workflow writes.

  Args:
    root: a results directory.

  Returns:
    (files checked, one message per file that does not load, naming it).
  """
  checked, bad = 0, []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      reader = READERS.get(os.path.splitext(name)[1])
      if reader is None or name.startswith("."):  # temporaries of writes in progress
        continue
      path = os.path.join(dirpath, name)
      if name.endswith(".json") and not name.endswith(".vocab.json"):
        continue  # download manifests: plain records, not inputs of any computation
      checked += 1
      try:
        reader(path)
      except InputError as e:
        bad.append(str(e))
      if checked % 200 == 0:
        print(f"{checked} files checked ({path})", file=sys.stderr, flush=True)
  return checked, bad
