"""Which package code a result depends on, as a hash the workflow puts in
every rule's `params`: Snakemake reruns a job when its params change, so an
edit to the package reruns exactly the jobs whose scripts import the edited
module, directly or through other package modules (and, through their
outputs, what depends on those), and nothing else.

The hash covers each module's code, not its text: the syntax tree without
docstrings (comments are not in it), so that an edit to a comment or a
docstring, or a reformatting, reruns nothing.
"""

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def imports(path) -> set[str]:
  """The package modules a Python file imports directly (by name, e.g.
  "metric" for `from manifold_metric import metric`)."""
  return {
      m
      for m in _imports(Path(path).read_text(), str(path), PACKAGE.name)
      if (PACKAGE / f"{m}.py").is_file()
  }


@functools.cache
def _imports(text: str, filename: str, package: str) -> frozenset[str]:
  found = set()
  for node in ast.walk(ast.parse(text, filename=filename)):
    if isinstance(node, ast.ImportFrom) and node.module:
      if node.module == package:
        found |= {a.name for a in node.names}
      elif node.module.startswith(package + "."):
        found.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")}
  return frozenset(found)


def closure(path) -> list[str]:
  """Every package module a file depends on, transitively, sorted."""
  seen, todo = set(), list(imports(path))
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo += imports(PACKAGE / f"{module}.py")
  return sorted(seen)


@functools.cache
def code_hash(path) -> str:
  """A short hash of the source of every package module `path` depends on.

  Args:
    path: a workflow script (or any Python file).

  Returns:
    16 hex digits; it changes when any of those modules' text changes.
  """
  h = hashlib.sha256()
  for module in closure(path):
    h.update(module.encode() + b"\0" + code(PACKAGE / f"{module}.py").encode() + b"\0")
  return h.hexdigest()[:16]


def code(path) -> str:
  """A module's code as text: its syntax tree without docstrings, so that
  comments, docstrings and layout do not change it."""
  return _code(Path(path).read_text(), str(path))


@functools.cache
def _code(text: str, filename: str) -> str:
  tree = ast.parse(text, filename=filename)
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if (
          body
          and isinstance(body[0], ast.Expr)
          and isinstance(body[0].value, ast.Constant)
          and isinstance(body[0].value.value, str)
      ):
        node.body = body[1:] or [ast.Pass()]
  return ast.dump(tree, annotate_fields=False, include_attributes=False)
