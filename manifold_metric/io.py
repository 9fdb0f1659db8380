"""Checkpoints and tables on disk, written atomically (`files.atomic_path`):
a killed job never leaves a truncated file under the real name. Every reader
turns a missing, truncated or corrupt file into an `InputError` that names
the file and says what to do; a table with no rows is never written.
"""

import json
import os

import numpy as np
import pandas as pd

from manifold_metric.files import InputError, atomic_path  # noqa: F401  (re-exported)


def save_checkpoint(path, arch: dict, variables, meta: dict | None = None) -> None:
  """One msgpack file: the architecture (plain data), variables, metadata."""
  import jax  # imported here: table and figure jobs never pay for importing JAX and Flax
  from flax import serialization
  state = {"arch": json.dumps(arch), "meta": json.dumps(meta or {}),
           "variables": jax.tree.map(np.asarray, serialization.to_state_dict(variables))}
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(serialization.msgpack_serialize(state))


def load_checkpoint(path):
  """Returns (arch, variables, meta) or raises InputError naming the file."""
  from flax import serialization  # see save_checkpoint
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
  """Writes a Parquet table atomically; a table with no rows is an error, so
  that an empty result never passes for a computed one."""
  if df.empty:
    raise ValueError(f"refusing to write {path}: the table has no rows")
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
