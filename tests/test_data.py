import gzip
import os
import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits

from manifold_metric import data, study
from manifold_metric.files import InputError

# The real subset shipped with the package (Debian's full copy is optional).
FASHION = study.bundled_dir("fashion_mnist")
DEBIAN = data.FASHION_MNIST_DIR


def standardized(raw, train_raw):
  """Reference standardization: per-channel stats of the training images, float64."""
  mean, std = train_raw.mean(axis=(0, 1, 2)), train_raw.std(axis=(0, 1, 2))
  return (raw - mean) / std


# digits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
  d = load_digits()
  return d.images[..., None] / 16, d.target


def test_digits_shapes_and_labels():
  ds = data.load("digits")
  assert ds["num_classes"] == 10
  assert ds["x_train"].shape[1:] == ds["x_val"].shape[1:] == (8, 8, 1)
  assert ds["x_train"].dtype == ds["x_val"].dtype == np.float32
  assert ds["y_train"].dtype == ds["y_val"].dtype == np.int32
  assert len(ds["x_train"]) + len(ds["x_val"]) == 1797
  assert len(ds["x_val"]) == len(ds["y_val"]) == 359  # 20% of each class, rounded
  for y in (ds["y_train"], ds["y_val"]):
    assert set(np.unique(y)) == set(range(10))
  assert "x_test" not in data.load("digits", test=True)  # digits has no test split


def test_split_stratified_deterministic_disjoint(digits):
  y = digits[1]
  train, val = data.split(y, 0.2, 0)
  assert len(np.intersect1d(train, val)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
  np.testing.assert_array_equal(np.bincount(y[val]), np.rint(0.2 * np.bincount(y)))
  again = data.split(y, 0.2, 0)
  np.testing.assert_array_equal(train, again[0])
  np.testing.assert_array_equal(val, again[1])
  assert not np.array_equal(np.sort(val), np.sort(data.split(y, 0.2, 1)[1]))
  # Exactly 40K/10K on CIFAR-sized balanced labels, as in the paper.
  train, val = data.split(np.repeat(np.arange(10), 5000), 0.2, 0)
  assert (len(train), len(val)) == (40000, 10000)


def test_digits_match_split_and_standardization(digits):
  x, y = digits
  ds = data.load("digits", split_seed=3)
  train, val = data.split(y, 0.2, 3)
  np.testing.assert_allclose(ds["x_train"], standardized(x[train], x[train]), atol=1e-5)
  np.testing.assert_allclose(ds["x_val"], standardized(x[val], x[train]), atol=1e-5)
  np.testing.assert_array_equal(ds["y_train"], y[train])
  np.testing.assert_array_equal(ds["y_val"], y[val])
  np.testing.assert_allclose(ds["x_train"].mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(ds["x_train"].std(axis=(0, 1, 2)), 1, atol=1e-5)
  same = data.load("digits", split_seed=3)
  for k in ("x_train", "y_train", "x_val", "y_val"):
    np.testing.assert_array_equal(ds[k], same[k])
  assert not np.array_equal(ds["y_val"], data.load("digits", split_seed=4)["y_val"])


def test_limit_keeps_a_prefix():
  full, small = data.load("digits"), data.load("digits", limit=100)
  assert len(small["x_train"]) == 100
  np.testing.assert_array_equal(small["x_train"], full["x_train"][:100])
  np.testing.assert_array_equal(small["y_train"], full["y_train"][:100])
  np.testing.assert_array_equal(small["x_val"], full["x_val"])
  assert len(np.unique(small["y_train"])) == 10  # a random subset, not one class


def test_bad_arguments():
  with pytest.raises(ValueError, match="digits, fashion_mnist, cifar10, cifar100"):
    data.load("mnist")
  with pytest.raises(ValueError, match="val_fraction"):
    data.load("digits", val_fraction=1.0)
  with pytest.raises(ValueError, match="data_dir"):
    data.load("cifar10")


# Fashion-MNIST (real files) ----------------------------------------------------------------


def idx_bytes(a, magic=None):
  a = np.asarray(a, np.uint8)
  head = magic if magic is not None else bytes([0, 0, 8, a.ndim])
  return head + np.asarray(a.shape, ">u4").tobytes() + a.tobytes()


def test_fashion_mnist_bundled_subset():
  ds = data.load("fashion_mnist", FASHION)
  assert ds["x_train"].shape == (16000, 28, 28, 1)
  assert ds["x_val"].shape == (4000, 28, 28, 1)
  assert ds["num_classes"] == 10
  counts = [1935, 2025, 1982, 2011, 1967, 2010, 2068, 2003, 1971, 2028]  # README.md beside it
  np.testing.assert_array_equal(np.bincount(ds["y_val"]), np.rint(0.2 * np.array(counts)))
  np.testing.assert_allclose(ds["x_train"].mean(), 0, atol=1e-4)
  np.testing.assert_allclose(ds["x_train"].std(), 1, atol=1e-4)


def test_fashion_mnist_default_is_debians_package(monkeypatch, tmp_path):
  """Without a path, Fashion-MNIST is read from Debian's package; the bundled
  subset is its first 20,000 training examples. Without the package the
  error says to install it (or use the bundled subset); with the directory
  present but broken, to reinstall it."""
  assert study.dataset_path({"source": "fashion_mnist"}) == DEBIAN
  if os.path.exists(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz")):
    full = data.read_idx(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz"), 3)
    assert full.shape == (60000, 28, 28)
    np.testing.assert_array_equal(
        data.read_idx(f"{FASHION}/train-images-idx3-ubyte.gz", 3), full[:20000]
    )
    ds = data.load("fashion_mnist", test=True)
    assert ds["x_train"].shape == (48000, 28, 28, 1) and ds["x_test"].shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds["y_val"]), [1200] * 10)
  else:
    with pytest.raises(
        InputError,
        match=r"apt-get install dataset-fashion-mnist\), or use the "
        r"subset shipped with the package \(dataset path: bundled\)",
    ):
      data.load("fashion_mnist")
  absent = tmp_path / "debian-absent"
  monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(absent))
  with pytest.raises(InputError, match=r"install Debian's package"):
    data.load("fashion_mnist", absent)
  absent.mkdir()
  with pytest.raises(InputError, match=r"installed but its files are incomplete: reinstall"):
    data.load("fashion_mnist", absent)


def test_pool_averages_blocks():
  x = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
  np.testing.assert_allclose(data.pool(x, 2)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
  ds = data.load("fashion_mnist", FASHION, pool_factor=2)
  assert ds["x_train"].shape == (16000, 14, 14, 1)
  np.testing.assert_allclose(ds["x_train"].std(), 1, atol=1e-4)
  with pytest.raises(ValueError, match="does not divide"):
    data.pool(x, 3)


def test_fashion_mnist_uncompressed_subset(tmp_path):
  x = data.read_idx(os.path.join(FASHION, "train-images-idx3-ubyte.gz"), 3)[:500]
  y = data.read_idx(os.path.join(FASHION, "train-labels-idx1-ubyte.gz"), 1)[:500]
  (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(x))
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y))
  np.testing.assert_array_equal(data.read_idx(tmp_path / "train-images-idx3-ubyte", 3), x)
  ds = data.load("fashion_mnist", tmp_path)
  assert len(ds["x_train"]) + len(ds["x_val"]) == 500
  train, val = data.split(y, 0.2, 0)
  np.testing.assert_array_equal(ds["y_val"], y[val])
  np.testing.assert_allclose(
      ds["x_val"][..., 0],
      standardized(x[val, ..., None] / 255, x[train, ..., None] / 255)[..., 0],
      atol=1e-5,
  )


def test_fashion_mnist_truncated_gz(tmp_path):
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
    raw = open(os.path.join(FASHION, name), "rb").read()
    (tmp_path / name).write_bytes(raw[: len(raw) // 2] if "images" in name else raw)
  with pytest.raises(InputError, match="truncated") as e:
    data.load("fashion_mnist", tmp_path)
  assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(e.value)


def test_idx_errors(tmp_path):
  images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes([1, 2]))
  bad = tmp_path / "train-images-idx3-ubyte"
  bad.write_bytes(idx_bytes(images, magic=bytes([0, 0, 8, 1])))  # labels' magic
  with pytest.raises(InputError, match="magic") as e:
    data.load("fashion_mnist", tmp_path)
  assert str(bad) in str(e.value)
  bad.write_bytes(idx_bytes(images)[:-10])  # uncompressed, truncated
  with pytest.raises(InputError, match="expected 1568") as e:
    data.load("fashion_mnist", tmp_path)
  assert str(bad) in str(e.value)
  bad.write_bytes(idx_bytes(images)[:6])  # shorter than its header
  with pytest.raises(InputError, match=str(bad)):
    data.load("fashion_mnist", tmp_path)
  bad.write_bytes(gzip.compress(idx_bytes(images[:1])))  # one image, two labels
  with pytest.raises(InputError, match="1 images"):
    data.load("fashion_mnist", tmp_path)
  with pytest.raises(
      InputError,
      match=r"put the IDX files from https://github.com/"
      r"zalandoresearch/fashion-mnist in .*nowhere",
  ) as e:
    data.load("fashion_mnist", tmp_path / "nowhere")
  assert str(tmp_path / "nowhere") in str(e.value)


# CIFAR (exact python-pickle format, built from real digit images) ------------------------


@pytest.fixture(scope="module")
def cifar_images(digits):
  """Digits upsampled to 32x32 with three distinguishable planes, NHWC uint8."""
  img = np.kron((digits[0][..., 0] * 15).astype(np.uint8), np.ones((4, 4), np.uint8))
  r, g, b = img, img.transpose(0, 2, 1), 240 - img[:, ::-1]
  r[0, 5, 7] = 255  # a marker: image 0, row 5, column 7, red
  return r, g, b, digits[1]


def cifar_rows(r, g, b):
  """CIFAR's layout: each row is the R, then G, then B 32x32 plane, row-major."""
  n = len(r)
  return np.concatenate([r.reshape(n, 1024), g.reshape(n, 1024), b.reshape(n, 1024)], axis=1)


def write_pickle(path, d):
  with open(path, "wb") as f:
    pickle.dump(d, f, protocol=2)


def write_cifar10(root, r, g, b, y):
  root.mkdir(parents=True, exist_ok=True)
  rows = cifar_rows(r, g, b)
  for i, idx in enumerate(np.array_split(np.arange(len(y)), 5), 1):
    write_pickle(
        root / f"data_batch_{i}",
        {
            b"batch_label": b"training batch %d of 5" % i,
            b"labels": [int(v) for v in y[idx]],
            b"data": rows[idx],
            b"filenames": [b"x.png"] * len(idx),
        },
    )
  write_pickle(
      root / "test_batch",
      {
          b"batch_label": b"testing batch 1 of 1",
          b"labels": [int(v) for v in y[:100]],
          b"data": rows[:100][:, ::-1].copy(),
      },
  )


def test_cifar10_layout(tmp_path, cifar_images):
  r, g, b, y = cifar_images
  write_cifar10(tmp_path / "cifar-10-batches-py", r, g, b, y)
  ds = data.load("cifar10", tmp_path, test=True)  # the parent directory
  assert ds["num_classes"] == 10
  assert ds["x_train"].shape[1:] == (32, 32, 3) and ds["x_train"].flags.c_contiguous
  nhwc = np.stack([r, g, b], axis=-1) / 255
  train, val = data.split(y, 0.2, 0)
  np.testing.assert_allclose(ds["x_train"], standardized(nhwc[train], nhwc[train]), atol=1e-5)
  np.testing.assert_allclose(ds["x_val"], standardized(nhwc[val], nhwc[train]), atol=1e-5)
  np.testing.assert_array_equal(ds["y_train"], y[train])
  assert len(ds["x_test"]) == 100
  # The marker pixel is the brightest red value, at NHWC position (5, 7, 0) of image 0.
  x0 = ds["x_train"][list(train).index(0)] if 0 in train else ds["x_val"][list(val).index(0)]
  assert np.unravel_index(np.argmax(x0[..., 0]), (32, 32)) == (5, 7)
  assert x0[5, 7, 0] == ds["x_train"][..., 0].max()
  same = data.load("cifar10", tmp_path / "cifar-10-batches-py", test=True)  # the batch directory
  for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    np.testing.assert_array_equal(ds[k], same[k])


def test_cifar100(tmp_path, cifar_images):
  r, g, b, y = cifar_images
  fine = y * 10 + np.arange(len(y)) % 10
  rows = cifar_rows(r, g, b)
  root = tmp_path / "cifar-100-python"
  root.mkdir()
  write_pickle(
      root / "train", {b"fine_labels": list(fine), b"coarse_labels": list(y), b"data": rows}
  )
  write_pickle(
      root / "test",
      {b"fine_labels": list(fine[:50]), b"coarse_labels": list(y[:50]), b"data": rows[:50]},
  )
  ds = data.load("cifar100", tmp_path, test=True)
  assert ds["num_classes"] == 100
  train, val = data.split(fine, 0.2, 0)
  np.testing.assert_array_equal(ds["y_train"], fine[train])
  np.testing.assert_array_equal(ds["y_test"], fine[:50])
  nhwc = np.stack([r, g, b], axis=-1) / 255
  np.testing.assert_allclose(ds["x_val"], standardized(nhwc[val], nhwc[train]), atol=1e-5)
  (root / "test").unlink()
  with pytest.raises(InputError, match="CIFAR-100.*missing test") as e:
    data.load("cifar100", root, test=True)
  assert str(root) in str(e.value)


def test_cifar_errors(tmp_path, cifar_images):
  r, g, b, y = cifar_images
  root = tmp_path / "cifar-10-batches-py"
  write_cifar10(root, r, g, b, y)
  batch = root / "data_batch_3"
  good = batch.read_bytes()
  batch.unlink()
  with pytest.raises(InputError, match="missing data_batch_3") as e:
    data.load("cifar10", root)
  assert str(root) in str(e.value) and "cs.toronto.edu" in str(e.value)
  rows = cifar_rows(r[:10], g[:10], b[:10])
  bad = {
      "wrong shape": {b"labels": list(y[:10]), b"data": rows[:, :3000]},
      "wrong dtype": {b"labels": list(y[:10]), b"data": rows.astype(np.float32)},
      "missing key": {b"data": rows},
      "label count": {b"labels": list(y[:9]), b"data": rows},
      "label range": {b"labels": [10] * 10, b"data": rows},
      "not a dict": [rows],
  }
  for what, d in bad.items():
    write_pickle(batch, d)
    with pytest.raises(InputError, match="expected CIFAR-10 python batches") as e:
      data.load("cifar10", root)
    assert str(batch) in str(e.value), what
  batch.write_bytes(good[: len(good) // 2])
  with pytest.raises(InputError, match="not a CIFAR python batch") as e:
    data.load("cifar10", root)
  assert str(batch) in str(e.value)


class _Payload:
  """Pickles as a call of os.system: what a crafted data_batch file would run."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_pickle_is_refused_without_running(tmp_path, cifar_images):
  r, g, b, y = cifar_images
  root = tmp_path / "cifar-10-batches-py"
  write_cifar10(root, r, g, b, y)
  marker = tmp_path / "payload-ran"
  # The payload sits where the labels belong, so plain pickle.load would run it.
  write_pickle(
      root / "data_batch_1",
      {b"labels": _Payload(marker), b"data": cifar_rows(r[:10], g[:10], b[:10])},
  )
  with pytest.raises(InputError, match=r"refusing to load posix\.system") as e:
    data.load("cifar10", root)
  assert str(root / "data_batch_1") in str(e.value)
  assert not marker.exists()
  with open(root / "data_batch_1", "rb") as f:  # the file really carries a payload
    pickle.load(f, encoding="bytes")
  assert marker.exists()


def test_cifar_batches_of_any_pickle_protocol_load(tmp_path, cifar_images):
  r, g, b, y = cifar_images
  rows = cifar_rows(r[:10], g[:10], b[:10])
  for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
    path = tmp_path / f"p{protocol}"
    path.write_bytes(pickle.dumps({b"labels": list(y[:10]), b"data": rows}, protocol=protocol))
    images, labels = data._cifar_part(path, b"labels", 10, "")
    np.testing.assert_array_equal(labels, y[:10])
    assert images.shape == (10, 32, 32, 3)


# npz cache --------------------------------------------------------------------------------


def test_npz_round_trip_and_corruption(tmp_path):
  ds = data.load("digits", limit=50)
  path = tmp_path / "prepared" / "digits.npz"
  data.save(ds, path)
  assert os.listdir(path.parent) == ["digits.npz"]  # no ".npz.npz", no temporary left behind
  back = data.load_npz(path)
  assert back.keys() == ds.keys()
  assert back["num_classes"] == 10 and isinstance(back["num_classes"], int)
  for k in ("x_train", "y_train", "x_val", "y_val"):
    np.testing.assert_array_equal(back[k], ds[k])
    assert back[k].dtype == ds[k].dtype
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(InputError, match="truncated or corrupt") as e:
    data.load_npz(path)
  assert str(path) in str(e.value)
  data.save({k: v for k, v in ds.items() if k != "y_val"}, path)
  with pytest.raises(InputError, match="lacks y_val"):
    data.load_npz(path)
  with pytest.raises(InputError, match="does not exist"):
    data.load_npz(tmp_path / "missing.npz")
