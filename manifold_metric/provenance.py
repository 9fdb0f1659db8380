"""Which package code a result depends on, as a hash the workflow puts in
every rule's `params`: Snakemake reruns a job when its params change, so an
edit to the package reruns exactly the jobs whose scripts import the edited
module, directly or through other package modules (and, through their
outputs, what depends on those), and nothing else."""

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def imports(path) -> set[str]:
  """The package modules a Python file imports directly (by name, e.g.
  "metric" for `from manifold_metric import metric`)."""
  found = set()
  for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
    if isinstance(node, ast.ImportFrom) and node.module:
      if node.module == PACKAGE.name:
        found |= {a.name for a in node.names}
      elif node.module.startswith(PACKAGE.name + "."):
        found.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      found |= {a.name.split(".")[1] for a in node.names
                if a.name.startswith(PACKAGE.name + ".")}
  return {m for m in found if (PACKAGE / f"{m}.py").is_file()}


def closure(path) -> list[str]:
  """Every package module a file depends on, transitively, sorted."""
  seen, todo = set(), list(imports(path))
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo += imports(PACKAGE / f"{module}.py")
  return sorted(seen)


@functools.lru_cache(maxsize=None)
def code_hash(path) -> str:
  """A short hash of the source of every package module `path` depends on.

  Args:
    path: a workflow script (or any Python file).

  Returns:
    16 hex digits; it changes when any of those modules' text changes.
  """
  h = hashlib.sha256()
  for module in closure(path):
    h.update(module.encode() + b"\0" + (PACKAGE / f"{module}.py").read_bytes() + b"\0")
  return h.hexdigest()[:16]
