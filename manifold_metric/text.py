"""WikiText-103 for masked language modelling: tokens, vocabulary, masking.

WikiText is already tokenized (words separated by spaces, rare words replaced
by `<unk>`), so the text pipeline is word-level: split lines on whitespace,
end every non-empty line with `<eos>`, keep the most frequent words, cut the
id stream into fixed-length chunks (no padding), and mask as BERT does.
"""

import collections
import gzip
import json
import lzma
import os

import jax
import jax.numpy as jnp
import numpy as np

from manifold_metric.files import InputError, atomic_path

SPLITS = ("train", "valid", "test")
# The vocabulary starts with these, in this order; none is ever masked.
SPECIALS = ("[PAD]", "[MASK]", "<unk>")
PAD_ID, MASK_ID, UNK_ID = range(len(SPECIALS))
SPECIAL_IDS = tuple(range(len(SPECIALS)))
EOS = "<eos>"
# BERT's share of masked (predicted) positions.
MASK_RATE = 0.15


# A split is read as it is, or compressed (the copy shipped with the package).
_OPENERS = {".xz": lzma.open, ".gz": gzip.open, "": open}


def split_path(data_dir, split: str) -> str:
  """The split's file in data_dir: wiki.<split>.tokens, or the same with
  .xz or .gz (read as they are); the plain name if none exists."""
  if split not in SPLITS:
    raise ValueError(f"unknown WikiText split {split!r}; expected one of {SPLITS}")
  plain = os.path.join(os.fspath(data_dir), f"wiki.{split}.tokens")
  return next((plain + ext for ext in (".xz", ".gz") if os.path.exists(plain + ext)), plain)


def read_split(data_dir, split: str) -> list[str]:
  """The split's whitespace tokens, with `<eos>` after every non-empty line."""
  path = split_path(data_dir, split)
  expected = f"the WikiText-103 {split} split as tokenized UTF-8 text (wiki.{split}.tokens)"
  opener = next(f for ext, f in _OPENERS.items() if path.endswith(ext))
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      tokens = [t for line in f if line.strip() for t in (*line.split(), EOS)]
  except FileNotFoundError:
    raise InputError(f"{path} does not exist; expected {expected}") from None
  except UnicodeDecodeError as e:
    raise InputError(f"{path} is not UTF-8 text ({e}); expected {expected}") from None
  except (OSError, EOFError, lzma.LZMAError) as e:  # a truncated or corrupt archive
    raise InputError(
        f"{path} is truncated or corrupt ({type(e).__name__}: {e}); " f"expected {expected}"
    ) from None
  if not tokens:
    raise InputError(f"{path} holds no tokens; expected {expected}")
  return tokens


def build_vocab(tokens, max_size: int) -> list[str]:
  """SPECIALS, then the most frequent tokens (ties by token), max_size in all."""
  if max_size <= len(SPECIALS):
    raise ValueError(f"vocabulary size {max_size} leaves no room beside {SPECIALS}")
  counts = collections.Counter(tokens)
  for s in SPECIALS:
    counts.pop(s, None)
  words = sorted(counts, key=lambda w: (-counts[w], w))
  return [*SPECIALS, *words[: max_size - len(SPECIALS)]]


def encode(tokens, vocab) -> np.ndarray:
  """Token ids (int32); tokens outside the vocabulary become `<unk>`."""
  index = {w: i for i, w in enumerate(vocab)}
  return np.fromiter((index.get(t, UNK_ID) for t in tokens), np.int32, len(tokens))


def save_vocab(vocab, path) -> None:
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(list(vocab), f, indent=1)


def load_vocab(path) -> list[str]:
  """A vocabulary written by save_vocab, or an InputError naming the file."""
  path = os.fspath(path)
  try:
    with open(path) as f:
      vocab = json.load(f)
  except FileNotFoundError:
    raise InputError(f"vocabulary {path} does not exist") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(
        f"vocabulary {path} is not valid JSON ({e}); delete it and rerun "
        "the workflow to rebuild it"
    ) from None
  if (
      not isinstance(vocab, list)
      or not all(isinstance(w, str) for w in vocab)
      or tuple(vocab[: len(SPECIALS)]) != SPECIALS
  ):
    raise InputError(
        f"vocabulary {path} is not a JSON list of tokens starting with "
        f"{list(SPECIALS)}; delete it and rerun the workflow to rebuild it"
    )
  return vocab


def sequences(ids, seq_len: int) -> np.ndarray:
  """(num, seq_len) int32 non-overlapping chunks; the remainder is dropped."""
  ids = np.asarray(ids, np.int32)
  num = len(ids) // seq_len
  if num == 0:
    raise ValueError(f"{len(ids)} tokens do not fill one sequence of length {seq_len}")
  return ids[: num * seq_len].reshape(num, seq_len)


def mask_tokens(
    key, ids, vocab_size: int, rate: float = MASK_RATE, special_ids: tuple[int, ...] = SPECIAL_IDS
):
  """BERT masking: (inputs, labels, weights), each shaped like ids.

  Each non-special position is selected with probability `rate`; a selected
  position's input becomes [MASK] with probability 0.8, a uniformly drawn
  non-special token with 0.1, and stays unchanged with 0.1. labels are the
  original ids, weights 1.0 on selected positions and 0.0 elsewhere.
  Jittable with vocab_size, rate and special_ids static.
  """
  ks, ku, kr = jax.random.split(key, 3)
  ids = jnp.asarray(ids, jnp.int32)
  special = jnp.isin(ids, jnp.asarray(special_ids, jnp.int32))
  selected = jax.random.bernoulli(ks, rate, ids.shape) & ~special
  u = jax.random.uniform(ku, ids.shape)
  allowed = jnp.asarray(np.setdiff1d(np.arange(vocab_size), special_ids), jnp.int32)
  random = allowed[jax.random.randint(kr, ids.shape, 0, allowed.shape[0])]
  inputs = jnp.where(selected & (u < 0.8), MASK_ID, jnp.where(selected & (u < 0.9), random, ids))
  return inputs, ids, selected.astype(jnp.float32)


TEXT_KEYS = ("train", "val")


def prepare(
    data_dir,
    vocab,
    *,
    train_split: str,
    val_split: str,
    seq_len: int,
    max_tokens: int | None = None,
) -> dict:
  """Training and validation sequences of a WikiText directory, encoded with
  `vocab`; max_tokens keeps the first tokens of each split (quick runs)."""
  ds = {}
  for name, split in zip(TEXT_KEYS, (train_split, val_split)):
    try:
      ds[name] = sequences(encode(read_split(data_dir, split)[:max_tokens], vocab), seq_len)
    except ValueError as e:  # too short for one sequence
      raise InputError(f"{split_path(data_dir, split)}: {e}") from None
  return {**ds, "vocab_size": len(vocab)}
