"""Checkpoints and tables on disk: atomic writes, errors that name the file.

Every writer writes to a temporary name in the target's directory and renames
it into place, so a killed job never leaves a truncated file under the real
name. Every reader turns a missing, truncated or corrupt file into an
`InputError` that names the file and says what to do.
"""

import contextlib
import json
import os
import tempfile

import jax
import numpy as np
import pandas as pd
from flax import serialization


class InputError(RuntimeError):
  """A file given as input is missing or not what it should be."""


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path beside `path`; renames it to `path` on success."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=os.path.dirname(path) or ".")
  os.close(fd)
  # mkstemp makes the file private (0600); results must get the permissions of
  # any file the user writes (the umask), e.g. group-readable on a cluster.
  umask = os.umask(0o022)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save_checkpoint(path, arch: dict, variables, meta: dict | None = None) -> None:
  """One msgpack file: the architecture (plain data), variables, metadata."""
  state = {"arch": json.dumps(arch), "meta": json.dumps(meta or {}),
           "variables": jax.tree.map(np.asarray, serialization.to_state_dict(variables))}
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(serialization.msgpack_serialize(state))


def load_checkpoint(path):
  """Returns (arch, variables, meta) or raises InputError naming the file."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      state = serialization.msgpack_restore(f.read())
    return json.loads(state["arch"]), state["variables"], json.loads(state["meta"])
  except FileNotFoundError:
    raise InputError(f"checkpoint {path} does not exist") from None
  except Exception as e:  # msgpack raises many types on truncated input
    raise InputError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: "
                     f"{e}); delete it and rerun the workflow to rebuild it") from e


def write_table(df: pd.DataFrame, path) -> None:
  with atomic_path(path) as tmp:
    df.to_parquet(tmp, index=False)


def read_table(path) -> pd.DataFrame:
  path = os.fspath(path)
  try:
    return pd.read_parquet(path)
  except FileNotFoundError:
    raise InputError(f"table {path} does not exist") from None
  except Exception as e:
    raise InputError(f"table {path} is not a readable Parquet file ({type(e).__name__}: "
                     f"{e}); delete it and rerun the workflow to rebuild it") from e


def write_json(obj, path) -> None:
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
