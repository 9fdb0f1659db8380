"""Image datasets as dicts of numpy arrays (paper, Appendix A.2.2).

`load` returns {"x_train", "y_train", "x_val", "y_val", "num_classes"} with
NHWC float32 images and int32 labels. As in the paper the validation set is
carved from the training set (CIFAR: 40K/10K) by a seeded stratified split, so
every run shares one validation set; the test split is only read on request.
Images are scaled to [0, 1], then standardized per channel with statistics of
the training part. Readers validate what they parse: a missing, truncated or
malformed file raises `InputError` naming the path and what was expected.
"""

import gzip
import os
import pickle
import zlib

import numpy as np

from manifold_metric.files import InputError, atomic_path

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
KEYS = ("x_train", "y_train", "x_val", "y_val", "num_classes")

_FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _fashion_hint(data_dir) -> str:
  """What to do about Fashion-MNIST files that are missing or broken in data_dir."""
  if os.path.abspath(data_dir) != FASHION_MNIST_DIR:
    return f"put the IDX files from {_FASHION_URL} in {data_dir}"
  if os.path.isdir(FASHION_MNIST_DIR):
    return (
        "Debian's dataset-fashion-mnist is installed but its files are incomplete: "
        "reinstall it (apt-get install --reinstall dataset-fashion-mnist)"
    )
  return (
      "install Debian's package (apt-get install dataset-fashion-mnist), or use the "
      "subset shipped with the package (dataset path: bundled)"
  )


# IDX (Fashion-MNIST) ------------------------------------------------------------------


def read_idx(path, ndim: int) -> np.ndarray:
  """A uint8 IDX array (gzipped or not) of `ndim` dimensions, validated."""
  hint = _fashion_hint(os.path.dirname(os.fspath(path)) or ".")
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise InputError(f"cannot read IDX file {path} ({type(e).__name__}: {e}); " f"{hint}") from e
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise InputError(
          f"IDX file {path} is a truncated or corrupt gzip file "
          f"({type(e).__name__}: {e}); {hint}"
      ) from e
  # Magic: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
  magic = bytes([0, 0, 8, ndim])
  if raw[:4] != magic:
    raise InputError(
        f"IDX file {path} starts with {raw[:4].hex()}, expected the magic "
        f"{magic.hex()} of a {ndim}-d uint8 IDX file; {hint}"
    )
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise InputError(
        f"IDX file {path} is truncated: {len(raw)} bytes, shorter than its "
        f"{header}-byte header; {hint}"
    )
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
  size = int(np.prod(shape))
  if len(raw) - header != size:
    raise InputError(
        f"IDX file {path} has {len(raw) - header} data bytes, expected "
        f"{size} for shape {shape} (truncated or corrupt); {hint}"
    )
  return np.frombuffer(raw, np.uint8, size, header).reshape(shape)


def _idx_path(data_dir, stem):
  for name in (stem + ".gz", stem):
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      return path
  raise InputError(
      f"expected Fashion-MNIST IDX file {stem}.gz (or {stem}) in {data_dir}; "
      f"{_fashion_hint(data_dir)}"
  )


def _fashion_mnist_part(data_dir, prefix):
  hint = _fashion_hint(data_dir)
  images_path = _idx_path(data_dir, f"{prefix}-images-idx3-ubyte")
  labels_path = _idx_path(data_dir, f"{prefix}-labels-idx1-ubyte")
  x, y = read_idx(images_path, 3), read_idx(labels_path, 1)
  if len(x) != len(y):
    raise InputError(
        f"{images_path} holds {len(x)} images but {labels_path} holds {len(y)} " f"labels; {hint}"
    )
  if len(y) and y.max() >= 10:
    raise InputError(f"{labels_path}: labels range up to {y.max()}, expected 0..9; {hint}")
  return x[..., None], y


# CIFAR python pickles -------------------------------------------------------------------


class _BatchUnpickler(pickle.Unpickler):
  """Loads a CIFAR python batch without running code from the file.

  A pickle runs code by naming a callable (a "global") for the loader to
  call; CIFAR's batches only name numpy's array and dtype reconstructors.
  Any other global is refused before it is looked up, so a crafted file
  fails instead of running its payload.
  """

  ALLOWED = (
      {
          (m, n)
          for m in ("numpy.core.multiarray", "numpy._core.multiarray")
          for n in ("_reconstruct", "scalar")
      }
      | {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
      | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
  )

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(
          f"refusing to load {module}.{name}: a CIFAR batch holds "
          "only numpy arrays, lists, dicts and strings"
      )
    return super().find_class(module, name)


def _cifar_part(path, label_key, num_classes, what):
  """(N, 32, 32, 3) uint8 images and labels of one CIFAR python pickle."""
  try:
    with open(path, "rb") as f:
      d = _BatchUnpickler(f, encoding="bytes").load()
    data, labels = d[b"data"], np.asarray(d[label_key])
  except Exception as e:  # unpickling a truncated or foreign file raises many types
    raise InputError(
        f"{path} is not a CIFAR python batch (a pickled dict with keys b'data' "
        f"and {label_key!r}): {type(e).__name__}: {e}; {what}"
    ) from e
  if not (
      isinstance(data, np.ndarray)
      and data.dtype == np.uint8
      and data.ndim == 2
      and data.shape[1] == 3072
  ):
    raise InputError(
        f"{path}: b'data' is {type(data).__name__} "
        f"{getattr(data, 'dtype', '')}{getattr(data, 'shape', '')}, "
        f"expected uint8 (N, 3072); {what}"
    )
  if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
    raise InputError(
        f"{path}: {label_key!r} has shape {labels.shape} and dtype {labels.dtype}, "
        f"expected {len(data)} integer labels; {what}"
    )
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise InputError(
        f"{path}: labels range over [{labels.min()}, {labels.max()}], expected "
        f"[0, {num_classes}); {what}"
    )
  # Each row is the R, G and B planes of a 32x32 image, each row-major.
  return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def _cifar(name, data_dir, test):
  if data_dir is None:
    raise ValueError(
        f"{name} needs data_dir: the directory with the CIFAR python version " f"from {_CIFAR_URL}"
    )
  if name == "cifar10":
    sub, title, train_files, test_file, label_key = (
        "cifar-10-batches-py",
        "CIFAR-10",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        b"labels",
    )
    num_classes = 10
  else:
    sub, title, train_files, test_file, label_key = (
        "cifar-100-python",
        "CIFAR-100",
        ["train"],
        "test",
        b"fine_labels",
    )
    num_classes = 100
  data_dir = os.fspath(data_dir)
  if os.path.isdir(os.path.join(data_dir, sub)):
    data_dir = os.path.join(data_dir, sub)
  files = train_files + ([test_file] if test else [])
  what = (
      f"expected {title} python batches {', '.join(files)} in {data_dir} (from {_CIFAR_URL}, "
      f"'{title} python version', which unpacks to {sub}/)"
  )
  missing = [f for f in files if not os.path.exists(os.path.join(data_dir, f))]
  if missing:
    raise InputError(f"{what}; missing {', '.join(missing)}")
  parts = [
      _cifar_part(os.path.join(data_dir, f), label_key, num_classes, what) for f in train_files
  ]
  x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
  test_part = (
      _cifar_part(os.path.join(data_dir, test_file), label_key, num_classes, what) if test else None
  )
  return x, y, 255, num_classes, test_part


# Split and standardization -------------------------------------------------------------


def split(y, val_fraction: float, seed: int):
  """(train, val) indices: a seeded split stratified by label.

  Each class contributes round(val_fraction * its count) examples to the
  validation set. Both index arrays are in a seeded random order, so a
  prefix of the training set is a random subset.
  """
  y = np.asarray(y)
  perm = np.random.default_rng(seed).permutation(len(y))
  ys = y[perm]
  counts = np.bincount(ys)
  rank = np.empty(len(y), np.int64)  # rank of each example within its class, in perm order
  rank[np.argsort(ys, kind="stable")] = np.arange(len(y)) - np.repeat(
      np.cumsum(counts) - counts, counts
  )
  is_val = rank < np.rint(val_fraction * counts).astype(np.int64)[ys]
  return perm[~is_val], perm[is_val]


def _rows(raw):
  """(N*H, W*C) view: per-channel ops on a length-C inner axis are ~10x slower in numpy."""
  return raw.reshape(-1, raw.shape[-2] * raw.shape[-1])


def _channel_stats(raw, scale, chunk=1024):
  """Per-channel mean and std of raw / scale, summed in float64 chunks (exact for uint8)."""
  channels = raw.shape[-1]
  total, squares = 0.0, 0.0
  for i in range(0, len(raw), chunk):
    x = _rows(raw[i : i + chunk]).astype(np.float64)
    total += x.sum(axis=0)
    squares += np.square(x).sum(axis=0)
  n = raw.size // channels
  mean = np.reshape(total, (-1, channels)).sum(axis=0) / (n * scale)
  mean_square = np.reshape(squares, (-1, channels)).sum(axis=0) / (n * scale**2)
  return mean, np.sqrt(np.maximum(mean_square - mean**2, 0.0))


def _standardize(raw, scale, mean, std):
  """(raw / scale - mean) / std in float32, as one multiply-add per pixel."""
  x = raw.astype(np.float32, order="C")  # C order, so _rows(x) is a view
  rows, width = _rows(x), raw.shape[-2]
  rows *= np.tile(1 / (scale * std), width).astype(np.float32)
  rows -= np.tile(mean / std, width).astype(np.float32)
  return x


# Sizes known before loading, for config checks ---------------------------------------

DIGITS_SIZE = 1797  # scikit-learn's digits
CIFAR_TRAIN_SIZE = 50_000  # both CIFARs' training batches
NUM_CLASSES = {"digits": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


def idx_count(path) -> int:
  """The number of items of an IDX file (gzipped or not), from its header."""
  with open(path, "rb") as f:
    head = f.read(2)
  opener = gzip.open if head == b"\x1f\x8b" else open
  with opener(path, "rb") as f:
    header = f.read(8)
  return int(np.frombuffer(header, ">u4", 1, 4)[0])


def max_train_examples(
    name: str, data_dir=None, *, val_fraction: float = 0.2, limit: int | None = None
) -> int | None:
  """At most how many training examples `load` gives, read without loading
  the data (None if the files are not there yet): the stratified split puts
  round(val_fraction * count) of each class in validation.

  Args:
    name, data_dir, val_fraction, limit: as for `load`.
  """
  if name == "digits":
    n = DIGITS_SIZE
  elif name == "fashion_mnist":
    try:
      n = idx_count(_idx_path(os.fspath(data_dir or FASHION_MNIST_DIR), "train-labels-idx1-ubyte"))
    except (InputError, OSError):
      return None
  else:
    n = CIFAR_TRAIN_SIZE
  bound = int(n * (1 - val_fraction) + NUM_CLASSES[name] / 2)
  return bound if limit is None else min(bound, limit)


# Public API ----------------------------------------------------------------------------


def pool(images, factor: int) -> np.ndarray:
  """Average-pools (N, H, W, C) images by `factor` in both directions."""
  n, h, w, c = images.shape
  if h % factor or w % factor:
    raise ValueError(f"pool factor {factor} does not divide the {h}x{w} images")
  blocks = images.reshape(n, h // factor, factor, w // factor, factor, c)
  return blocks.mean(axis=(2, 4), dtype=np.float32)


def load(
    name: str,
    data_dir=None,
    *,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    limit: int | None = None,
    test: bool = False,
    pool_factor: int = 1,
) -> dict:
  """Loads, splits and standardizes dataset `name` (one of DATASETS).

  data_dir: where the files are (fashion_mnist defaults to FASHION_MNIST_DIR;
  cifar10/cifar100 accept the batch directory or its parent; digits ships
  with scikit-learn). limit keeps the first `limit` training examples; the
  standardization statistics come from the whole training part, so a limited
  run sees a prefix of the full run's arrays. test=True adds x_test, y_test
  when the dataset has a test split (not digits). pool_factor > 1
  average-pools the images first (e.g. 2: 28x28 -> 14x14).
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
  if not 0 < val_fraction < 1:
    raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
  if limit is not None and limit < 1:
    raise ValueError(f"limit must be positive, got {limit}")
  test_part = None
  if name == "digits":
    # Imported here: scikit-learn takes seconds to import, and every workflow
    # job imports this module while only this source needs it.
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y, scale, num_classes = d.images.astype(np.uint8)[..., None], d.target, 16, 10
  elif name == "fashion_mnist":
    data_dir = os.fspath(data_dir or FASHION_MNIST_DIR)
    x, y = _fashion_mnist_part(data_dir, "train")
    scale, num_classes = 255, 10
    if test:
      test_part = _fashion_mnist_part(data_dir, "t10k")
  else:
    x, y, scale, num_classes, test_part = _cifar(name, data_dir, test)

  if pool_factor > 1:
    x = pool(x, pool_factor)
    if test_part is not None:
      test_part = (pool(test_part[0], pool_factor), test_part[1])
  train, val = split(y, val_fraction, split_seed)
  mean, std = _channel_stats(x[train], scale)
  train = train[:limit]
  ds = {
      "x_train": _standardize(x[train], scale, mean, std),
      "y_train": y[train].astype(np.int32),
      "x_val": _standardize(x[val], scale, mean, std),
      "y_val": y[val].astype(np.int32),
      "num_classes": num_classes,
  }
  if test_part is not None:
    ds["x_test"] = _standardize(test_part[0], scale, mean, std)
    ds["y_test"] = test_part[1].astype(np.int32)
  return ds


def save(ds: dict, path) -> None:
  """Writes a prepared dataset as one .npz, atomically."""
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, **ds)  # a file object, so numpy does not append ".npz" to the name


def _read_npz(path, read):
  """read(open NpzFile) for a .npz, or an InputError naming the file."""
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      return read(z)
  except FileNotFoundError:
    raise InputError(f"dataset {path} does not exist") from None
  except Exception as e:  # zipfile and numpy raise many types on truncated input
    raise InputError(
        f"dataset {path} is truncated or corrupt ({type(e).__name__}: {e}); "
        "delete it and rerun the workflow to rebuild it"
    ) from e


def npz_keys(path) -> list[str]:
  """The names of the arrays in a .npz written by `save`."""
  return _read_npz(path, lambda z: list(z.files))


def load_npz(path, keys=KEYS) -> dict:
  """Reads a dataset written by `save` (with arrays `keys`), or raises
  InputError naming the file."""
  path = os.fspath(path)
  ds = _read_npz(path, lambda z: {k: z[k] for k in z.files})
  missing = [k for k in keys if k not in ds]
  if missing:
    raise InputError(
        f"dataset {path} lacks {', '.join(missing)}; delete it and rerun the "
        "workflow to rebuild it"
    )
  if "num_classes" in ds:
    ds["num_classes"] = int(ds["num_classes"])
  return ds
