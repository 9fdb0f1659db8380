"""Parquet tables on disk, written atomically (`files.atomic_path`): a
killed job never leaves a truncated file under the real name. A missing or
unreadable table is an `InputError` that names the file and says what to
do; a table with no rows is never written.
"""

import os

import pyarrow as pa
import pyarrow.parquet as pq

from manifold_metric.files import InputError, atomic_path

# pandas is imported where a table is read or written from a DataFrame:
# training jobs write their logs with `write_records` and never load it (0.2 s).


def write_table(df, path) -> None:
  """Writes a pandas DataFrame as a Parquet table atomically; a table with no
  rows is an error, so that an empty result never passes for a computed one."""
  if df.empty:
    raise ValueError(f"refusing to write {path}: the table has no rows")
  with atomic_path(path) as tmp:
    df.to_parquet(tmp, index=False)


def write_records(records: list[dict], path) -> None:
  """Writes rows given as dicts as `write_table` writes `pd.DataFrame(records)`
  (pandas reads both back alike), without pandas.

  Args:
    records: the rows, in order; at least one. Columns are every key, in the
      order they first appear; a row without a column has a null there (NaN
      in pandas), as in `pd.DataFrame(records)`.
    path: the Parquet file, written atomically.
  """
  if not records:
    raise ValueError(f"refusing to write {path}: the table has no rows")
  # Not pa.Table.from_pylist: it takes its columns from the first row only.
  columns = dict.fromkeys(k for r in records for k in r)
  table = pa.table({c: [r.get(c) for r in records] for c in columns})
  with atomic_path(path) as tmp:
    pq.write_table(table, tmp)


def read_table(path):
  """A Parquet table as a pandas DataFrame; an `InputError` that says what
  to do when it is missing or unreadable."""
  import pandas as pd

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
