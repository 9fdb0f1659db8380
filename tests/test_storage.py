"""Checkpoints (`checkpoints`) and tables (`tables`) on disk: round trips,
models stacked over seeds, and damaged or mismatched files named."""

import os

import jax
import numpy as np
import pandas as pd
import pytest

from manifold_metric import archs, checkpoints, image_models, tables
from manifold_metric.files import InputError, atomic_path


def _arch(kind, **sizes):
  return archs.with_data(archs.make({"kind": kind, **sizes}), num_classes=10)


def _variables(arch, seed=0):
  """Random variables of the model's shapes (traced, not compiled)."""
  shapes = jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), (8, 8, 1)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "arch",
    [
        _arch("cnn"),
        _arch("resnet18", stages=[4, 4, 4, 4], mids=[[4], [2, 3], [4], [4]]),
        archs.BERT(1, 8, 2, (8,), 50, 16),
    ],
    ids=lambda a: a.kind,
)
def test_checkpoint_round_trip(tmp_path, arch):
  if arch.kind == "bert":
    v = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
  else:
    v = _variables(arch)
  path = tmp_path / "a" / "ckpt.msgpack"
  checkpoints.save_checkpoint(path, arch, v, {"performance": 0.5})
  arch2, v2, meta = checkpoints.load_checkpoint(path)
  assert arch2 == arch and type(arch2) is type(arch) and meta == {"performance": 0.5}
  _assert_same(v, v2)
  assert os.listdir(path.parent) == ["ckpt.msgpack"]  # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_bad_checkpoint_names_the_file(tmp_path, damage):
  path = tmp_path / "ckpt.msgpack"
  arch = _arch("mlp")
  checkpoints.save_checkpoint(path, arch, _variables(arch))
  data = path.read_bytes()
  if damage == "truncate":
    path.write_bytes(data[: len(data) // 2])
  elif damage == "garbage":
    path.write_bytes(b"\x00not msgpack" * 10)
  else:
    path.unlink()
  with pytest.raises(InputError, match=str(path)):
    checkpoints.load_checkpoint(path)


def test_save_seeds_and_load_stacked_round_trip(tmp_path):
  arch = _arch("mlp", hidden=[6, 4])
  models = [_variables(arch, seed) for seed in (3, 5, 8)]
  stacked = jax.tree.map(lambda *a: np.stack(a), *models)
  paths = [tmp_path / f"seed{s}.msgpack" for s in (3, 5, 8)]
  metas = [{"seed": s, "performance": 0.1 * s} for s in (3, 5, 8)]
  checkpoints.save_seeds(paths, arch, stacked, metas)
  for path, model, meta in zip(paths, models, metas):  # one model per file
    a, v, m = checkpoints.load_checkpoint(path)
    assert a == arch and m == meta
    _assert_same(v, model)
  _assert_same(checkpoints.model_of(stacked, 1), models[1])
  # Loaded in another order: stacked in the order of the paths.
  order = [2, 0, 1]
  arch2, v2, metas2 = checkpoints.load_stacked([paths[i] for i in order])
  assert arch2 == arch and metas2 == [metas[i] for i in order]
  _assert_same(v2, jax.tree.map(lambda a: a[np.array(order)], stacked))


def test_load_stacked_names_a_file_of_another_architecture(tmp_path):
  arch, wider = _arch("mlp", hidden=[6]), _arch("mlp", hidden=[7])
  paths = [tmp_path / "a.msgpack", tmp_path / "b.msgpack", tmp_path / "c.msgpack"]
  checkpoints.save_checkpoint(paths[0], arch, _variables(arch))
  checkpoints.save_checkpoint(paths[1], wider, _variables(wider))
  checkpoints.save_checkpoint(paths[2], arch, _variables(arch))
  with pytest.raises(
      InputError,
      match=rf"checkpoint {paths[1]} holds MLP\(hidden=\(7,\).*"
      rf"not MLP\(hidden=\(6,\).* like {paths[0]}",
  ):
    checkpoints.load_stacked(paths)
  paths[1].write_bytes(b"garbage")
  with pytest.raises(InputError, match=str(paths[1])):
    checkpoints.load_stacked(paths)


def test_table_round_trip_and_corruption(tmp_path):
  df = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]})
  path = tmp_path / "t.parquet"
  tables.write_table(df, path)
  pd.testing.assert_frame_equal(pd.read_parquet(path), df)
  pd.testing.assert_frame_equal(tables.read_table(path), df)
  path.write_bytes(path.read_bytes()[:20])
  with pytest.raises(InputError, match="t.parquet is not a readable Parquet"):
    tables.read_table(path)
  with pytest.raises(InputError, match="missing.parquet does not exist"):
    tables.read_table(tmp_path / "missing.parquet")


def test_failed_write_leaves_nothing(tmp_path):
  path = tmp_path / "out.bin"
  with pytest.raises(RuntimeError):
    with atomic_path(path) as tmp:
      open(tmp, "wb").write(b"partial")
      raise RuntimeError("killed")
  assert os.listdir(tmp_path) == []


def test_a_table_with_no_rows_is_refused(tmp_path):
  path = tmp_path / "t.parquet"
  with pytest.raises(ValueError, match=f"refusing to write {path}: the table has no rows"):
    tables.write_table(pd.DataFrame(columns=["setting", "value"]), path)
  assert list(tmp_path.iterdir()) == []
