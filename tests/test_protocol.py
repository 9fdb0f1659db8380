"""The protocol shared by every model of one seed: one batch, one walk; a
candidate's own training seed; barrier tables and Table 4's timings."""

import jax
import numpy as np
import pytest

from manifold_metric import barrier, bert, data, io, models, permutations, protocol, text, \
    tracks


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def test_metric_batch_is_seeded_and_shared(digits):
  arch = models.default_arch("mlp", 10)
  x0, y0 = protocol.metric_batch(arch, digits, 0, 512)
  x0b, _ = protocol.metric_batch(models.default_arch("cnn", 10), digits, 0, 512)
  x1, _ = protocol.metric_batch(arch, digits, 1, 512)
  assert x0.shape == (512, 8, 8, 1) and y0.shape == (512,)
  np.testing.assert_array_equal(x0, x0b)  # every model of a seed: the same batch
  assert not np.array_equal(x0, x1)
  assert len(protocol.metric_batch(arch, digits, 0, 10**6)[0]) == len(digits["x_train"])
  idx = protocol.batch_indices(len(digits["x_train"]), 0, 512)
  np.testing.assert_array_equal(x0, digits["x_train"][idx])
  assert (np.diff(idx) > 0).all()


def test_bert_metric_batch_masks_the_seeds_sequences_once():
  rng = np.random.default_rng(0)
  ds = {"train": rng.integers(3, 50, (40, 16)).astype(np.int32), "vocab_size": 50}
  arch = bert.arch("tinybert", 50, max_len=16, hidden=8, heads=2, ffn=8)
  inputs, positions, labels = protocol.metric_batch(arch, ds, 3, 6)
  again = protocol.metric_batch(arch, ds, 3, 6)
  rows = protocol.batch_indices(40, 3, 6)  # the same rows as an image batch would take
  want = bert.probe_batch(text.mask_tokens(jax.random.key(3), ds["train"][rows], 50))
  for got, w, a in zip((inputs, positions, labels), want, again):
    np.testing.assert_array_equal(got, w)
    np.testing.assert_array_equal(got, a)
  np.testing.assert_array_equal(labels, ds["train"][rows].reshape(-1)[positions])


def test_walk_and_candidate_seed():
  np.testing.assert_array_equal(protocol.walk(4, 9, 20),
                                permutations.random_walk(jax.random.key(4), 9, 20))
  assert protocol.candidate_seed(3) != 3 and protocol.candidate_seed(3) == protocol.candidate_seed(3)


def test_barrier_table_is_the_seeds_walk_on_each_checkpoint(digits, tmp_path):
  arch = models.default_arch("mlp", 10, hidden=[6])
  paths = []
  for i in range(2):
    v = models.init(arch, jax.random.key(i), (8, 8, 1))
    paths.append(tmp_path / f"m{i}.msgpack")
    io.save_checkpoint(paths[-1], arch, v)
  table = protocol.barrier_table([("base", 0, paths[0]), ("x2", 3, paths[1])], digits,
                                 setting="s", seed=2, n=30, batch_size=64)
  assert list(table.columns) == ["setting", "model", "expansion", "group", "seed", "epoch",
                                 "node", "barrier"]
  assert len(table) == 60 and set(table.group) == {"hiddens_0"} and (table.seed == 2).all()
  _, v1, _ = io.load_checkpoint(paths[1])
  want = barrier.barrier_set(models.probe(arch), models.first_group(arch), v1,
                             protocol.metric_batch(arch, digits, 2, 64), protocol.walk(2, 6, 30))
  np.testing.assert_array_equal(table[table.epoch == 3].barrier, np.asarray(want))


def test_table4_times_every_score_and_says_what_each_computes(digits):
  arch = models.default_arch("mlp", 10, hidden=[6])
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  times = protocol.time_scores(arch, v, digits, seed=0, n=20, batch_size=32)
  assert set(times) == set(protocol.COMPUTATION) and all(t > 0 for t in times.values())
  import pandas as pd
  table = pd.DataFrame([{"setting": "s", "metric": k, "seconds": t, "n": 20, "batch_size": 32,
                         "device": "cpu"} for k, t in times.items()])
  md = protocol.table4_markdown(table)
  assert "computation" in md and "no backward" in md
  ratio = times["manifold"] / times["synflow"]
  assert (f"{ratio:.0f}x" if ratio >= 1 else f"{ratio:.2f}x") in md


def test_scores_include_the_size(digits):
  arch = models.default_arch("mlp", 10, hidden=[6])
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  s = protocol.scores(arch, v, digits, seed=0, batch_size=32)
  assert s["size"] == 64 * 6 + 6 + 6 * 10 + 10 == tracks.param_count(v)
  assert {"gradnorm", "snip", "grasp", "synflow", "jacov"} <= set(s)
