import os

import jax
import numpy as np
import pandas as pd
import pytest

from manifold_metric import io, models


def test_checkpoint_round_trip(tmp_path):
  arch = models.default_arch("cnn", 10)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  path = tmp_path / "a" / "ckpt.msgpack"
  io.save_checkpoint(path, arch, v, {"performance": 0.5})
  arch2, v2, meta = io.load_checkpoint(path)
  assert arch2 == arch and meta == {"performance": 0.5}
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v2)):
    np.testing.assert_array_equal(a, b)
  assert os.listdir(path.parent) == ["ckpt.msgpack"]  # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_bad_checkpoint_names_the_file(tmp_path, damage):
  path = tmp_path / "ckpt.msgpack"
  arch = models.default_arch("mlp", 10)
  io.save_checkpoint(path, arch, models.init(arch, jax.random.key(0), (8, 8, 1)))
  data = path.read_bytes()
  if damage == "truncate":
    path.write_bytes(data[:len(data) // 2])
  elif damage == "garbage":
    path.write_bytes(b"\x00not msgpack" * 10)
  else:
    path.unlink()
  with pytest.raises(io.InputError, match=str(path)):
    io.load_checkpoint(path)


def test_table_round_trip_and_corruption(tmp_path):
  df = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]})
  path = tmp_path / "t.parquet"
  io.write_table(df, path)
  pd.testing.assert_frame_equal(pd.read_parquet(path), df)
  pd.testing.assert_frame_equal(io.read_table(path), df)
  path.write_bytes(path.read_bytes()[:20])
  with pytest.raises(io.InputError, match="t.parquet is not a readable Parquet"):
    io.read_table(path)


def test_failed_write_leaves_nothing(tmp_path):
  path = tmp_path / "out.bin"
  with pytest.raises(RuntimeError):
    with io.atomic_path(path) as tmp:
      open(tmp, "wb").write(b"partial")
      raise RuntimeError("killed")
  assert os.listdir(tmp_path) == []


def test_a_table_with_no_rows_is_refused(tmp_path):
  path = tmp_path / "t.parquet"
  with pytest.raises(ValueError, match=f"refusing to write {path}: the table has no rows"):
    io.write_table(pd.DataFrame(columns=["setting", "value"]), path)
  assert list(tmp_path.iterdir()) == []
