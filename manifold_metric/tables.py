"""Parquet tables on disk, written atomically (`files.atomic_path`): a
killed job never leaves a truncated file under the real name. A missing or
unreadable table is an `InputError` that names the file and says what to
do; a table with no rows is never written.
"""

import os

import pandas as pd

from manifold_metric.files import InputError, atomic_path


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
    raise InputError(
        f"table {path} is not a readable Parquet file ({type(e).__name__}: "
        f"{e}); delete it and rerun the workflow to rebuild it"
    ) from e
