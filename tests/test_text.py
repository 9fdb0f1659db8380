import gzip
import hashlib
import json
import lzma
import random

import jax
import numpy as np
import pytest

from manifold_metric import study, text
from manifold_metric.files import InputError

DATA = study.bundled_dir("wikitext")  # the real splits shipped with the package, xz
mask = jax.jit(text.mask_tokens, static_argnames=("vocab_size", "rate", "special_ids"))


@pytest.fixture(scope="module")
def valid():
  return text.read_split(DATA, "valid")


@pytest.mark.parametrize(
    "split, lines, published", [("valid", 3760, 217646), ("test", 4358, 245569)]
)
def test_read_split_counts(split, lines, published):
  tokens = text.read_split(DATA, split)
  with lzma.open(text.split_path(DATA, split), "rt", encoding="utf-8") as f:
    nonempty = sum(1 for line in f if line.strip())
  assert tokens.count(text.EOS) == nonempty
  assert tokens[-1] == text.EOS and all(t == t.strip() and t for t in tokens[:1000])
  # Merity et al. (2016) count one <eos> per line, empty lines included.
  assert len(tokens) + (lines - nonempty) == published


def test_read_split_errors(tmp_path):
  with pytest.raises(InputError, match=r"wiki\.valid\.tokens does not exist"):
    text.read_split(tmp_path, "valid")
  (tmp_path / "wiki.test.tokens").write_text(" \n\n \n")
  with pytest.raises(InputError, match=rf"{tmp_path}/wiki\.test\.tokens holds no tokens"):
    text.read_split(tmp_path, "test")
  with pytest.raises(ValueError, match="unknown WikiText split"):
    text.read_split(tmp_path, "dev")


def test_vocab_deterministic_capped_with_unk(valid):
  vocab = text.build_vocab(valid, 2000)
  assert len(vocab) == 2000 and len(set(vocab)) == 2000
  assert tuple(vocab[:3]) == text.SPECIALS and vocab.count("<unk>") == 1
  shuffled = list(valid)
  random.Random(0).shuffle(shuffled)
  assert text.build_vocab(shuffled, 2000) == vocab
  counts = {w: 0 for w in vocab}
  for t in valid:
    if t in counts:
      counts[t] += 1
  words = vocab[3:]
  assert all(counts[a] >= counts[b] for a, b in zip(words, words[1:]))
  assert vocab[3] == "the" and text.EOS in vocab
  ids = text.encode(valid, vocab)
  assert ids.dtype == np.int32 and ids.shape == (len(valid),)
  oov = np.array([t not in counts for t in valid])
  assert oov.any() and np.all(ids[oov] == text.UNK_ID)
  assert np.all(ids[~oov] != text.UNK_ID) or "<unk>" in valid
  assert [vocab[i] for i in ids[:50]] == [t if t in counts else "<unk>" for t in valid[:50]]


def test_vocab_roundtrip_and_errors(tmp_path):
  vocab = text.build_vocab("b a c a b a <unk> [MASK]".split(), 10)
  assert vocab == [*text.SPECIALS, "a", "b", "c"]
  path = tmp_path / "vocab.json"
  text.save_vocab(vocab, path)
  assert text.load_vocab(path) == vocab
  with pytest.raises(InputError, match=f"{tmp_path}/missing.json does not exist"):
    text.load_vocab(tmp_path / "missing.json")
  path.write_text('["a", ')
  with pytest.raises(InputError, match=f"{path} is not valid JSON"):
    text.load_vocab(path)
  path.write_text(json.dumps(["a", "b"]))
  with pytest.raises(InputError, match=f"{path} is not a JSON list of tokens starting"):
    text.load_vocab(path)


def test_sequences():
  ids = np.arange(103)
  s = text.sequences(ids, 10)
  assert s.shape == (10, 10) and s.dtype == np.int32
  np.testing.assert_array_equal(s.ravel(), ids[:100])
  with pytest.raises(ValueError, match="do not fill one sequence"):
    text.sequences(ids[:5], 10)


def test_mask_tokens_statistics(valid):
  vocab_size = 2000
  ids = text.encode(valid, text.build_vocab(valid, vocab_size))
  inputs, labels, weights = map(np.asarray, mask(jax.random.key(0), ids, vocab_size))
  special = np.isin(ids, text.SPECIAL_IDS)
  assert special.mean() > 0.1  # <unk> is frequent, so the exclusion is exercised
  sel = weights == 1.0
  assert set(np.unique(weights)) == {0.0, 1.0}
  np.testing.assert_array_equal(labels, ids)
  assert not sel[special].any()
  assert abs(sel[~special].mean() - 0.15) < 0.005
  np.testing.assert_array_equal(inputs[~sel], ids[~sel])
  masked = inputs[sel] == text.MASK_ID
  kept = inputs[sel] == ids[sel]
  random_ = ~masked & ~kept
  assert abs(masked.mean() - 0.8) < 0.01
  assert abs(random_.mean() - 0.1) < 0.01 and abs(kept.mean() - 0.1) < 0.01
  assert not np.isin(inputs[sel][~masked], text.SPECIAL_IDS).any()
  assert inputs.min() >= 0 and inputs.max() < vocab_size
  assert len(np.unique(inputs[sel][random_])) > 500  # drawn across the vocabulary


def test_mask_tokens_deterministic_and_jittable():
  ids = np.random.default_rng(0).integers(0, 50, (64, 32)).astype(np.int32)
  a = mask(jax.random.key(1), ids, 50)
  b = mask(jax.random.key(1), ids, 50)
  c = mask(jax.random.key(2), ids, 50)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])
  assert a[0].shape == ids.shape and a[0].dtype == np.int32 and a[2].dtype == np.float32


@pytest.mark.parametrize(
    "split, sha256",
    [
        ("valid", "77e84560fb526719a7c312c653c7ee39c0934dde27c0d4a86832641637d7c583"),
        ("test", "5c3f54ac993e8e6bbf53c5f531f08c50c28c98c295250883468196169e3532cc"),
    ],
)
def test_bundled_splits_are_the_released_files(split, sha256):
  """Byte for byte the release's wiki.<split>.tokens (checksums in the README beside them)."""
  path = text.split_path(DATA, split)
  assert path.endswith(f"wiki.{split}.tokens.xz")
  with lzma.open(path) as f:
    assert hashlib.sha256(f.read()).hexdigest() == sha256
  assert sha256 in open(f"{DATA}/README.md").read()


def test_compressed_and_plain_files_read_alike(tmp_path):
  raw = "first line here\n\n = Title = \nsecond line\n"
  for name, write in (
      ("plain", lambda p: p.write_text(raw)),
      ("gz", lambda p: p.with_name(p.name + ".gz").write_bytes(gzip.compress(raw.encode()))),
      ("xz", lambda p: p.with_name(p.name + ".xz").write_bytes(lzma.compress(raw.encode()))),
  ):
    (tmp_path / name).mkdir()
    write(tmp_path / name / "wiki.valid.tokens")
    assert text.read_split(tmp_path / name, "valid") == [
        "first",
        "line",
        "here",
        text.EOS,
        "=",
        "Title",
        "=",
        text.EOS,
        "second",
        "line",
        text.EOS,
    ], name


def test_corrupt_archive_and_short_split_name_the_file(tmp_path):
  good = lzma.compress(b"some words\n" * 50)
  (tmp_path / "wiki.valid.tokens.xz").write_bytes(good[: len(good) // 2])
  with pytest.raises(InputError, match=r"wiki\.valid\.tokens\.xz is truncated or corrupt"):
    text.read_split(tmp_path, "valid")
  (tmp_path / "wiki.valid.tokens.xz").write_bytes(good)
  (tmp_path / "wiki.test.tokens").write_text("too short\n")
  vocab = text.build_vocab(text.read_split(tmp_path, "valid"), 10)
  with pytest.raises(
      InputError, match=r"wiki\.test\.tokens: 3 tokens do not fill one " r"sequence of length 8"
  ):
    text.prepare(tmp_path, vocab, train_split="valid", val_split="test", seq_len=8)
