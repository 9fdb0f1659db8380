"""The random walks of Appendix A.2.1 (numpy): the vectorized walk against a
literal loop over the same draws, the nonidentity walk against the paper's,
and seeding."""

import math

import numpy as np
import pytest

from manifold_metric import walks


def _literal(seed, size, n):
  """The paper's walk as a loop: node i + 1 is node i with ceil(log2 l)
  transpositions of two distinct neurons, applied one after the other. The
  draws are those of the module: every step's first neurons, then every
  step's offsets to the second (1..l-1, so the two differ)."""
  rng = np.random.default_rng([seed, size])
  k = max(1, math.ceil(math.log2(size)))
  first = rng.integers(0, size, (n, k))
  second = (first + rng.integers(1, size, (n, k))) % size
  node, nodes = list(range(size)), [list(range(size))]
  for i in range(n):
    node = list(node)
    for j in range(k):
      a, b = first[i, j], second[i, j]
      assert a != b
      node[a], node[b] = node[b], node[a]
    nodes.append(node)
  return np.array(nodes)


def _steps(nodes):
  """tau_i with node i + 1 = node i[tau_i], by a loop."""
  out = []
  for a, b in zip(nodes[:-1], nodes[1:]):
    inverse = {v: p for p, v in enumerate(a)}
    out.append([inverse[v] for v in b])
  return np.array(out)


def _is_identity(steps):
  return (steps == np.arange(steps.shape[1])).all(axis=1)


@pytest.mark.parametrize("size,n", [(2, 5), (3, 40), (4, 37), (6, 1), (20, 200), (33, 1000)])
def test_the_walk_is_the_literal_loop_over_the_same_draws(size, n):
  got = walks.random_walk(seed=5, size=size, n=n)
  assert got.shape == (n + 1, size) and got.dtype == np.int32
  np.testing.assert_array_equal(got, _literal(5, size, n))
  assert walks.num_swaps(size) == max(1, math.ceil(math.log2(size)))


def test_steps_are_ceil_log2_transpositions():
  size, n = 20, 200
  nodes = walks.random_walk(0, size, n)
  np.testing.assert_array_equal(nodes[0], np.arange(size))
  k = walks.num_swaps(size)
  assert k == 5
  for a, b in zip(nodes[:-1], nodes[1:]):
    assert sorted(b) == list(range(size))  # a permutation
    assert np.sum(a != b) <= 2 * k  # at most k transpositions
  assert np.mean(np.sum(nodes[1:] != nodes[:-1], axis=1)) > k  # and usually more than one


@pytest.mark.parametrize("size", [3, 4, 12])
def test_nonidentity_walk_redraws_exactly_the_identity_steps(size):
  n = 600
  out = walks.random_walks(11, size, n)
  assert list(out) == list(walks.WALKS)
  paper, other = _steps(out["paper"]), _steps(out["nonidentity"])
  still = _is_identity(paper)
  assert still.any()  # the case in question occurs (rarely for l = 12: 4 transpositions)
  assert not _is_identity(other).any()
  np.testing.assert_array_equal(other[~still], paper[~still])  # step for step the same walk
  np.testing.assert_array_equal(out["nonidentity"][0], np.arange(size))
  # Every node of the nonidentity walk differs from the one before it.
  assert (np.abs(np.diff(out["nonidentity"], axis=0)).sum(axis=1) > 0).all()


def test_identity_steps_happen_at_the_rate_of_two_equal_transpositions():
  # Two transpositions compose to the identity iff they swap the same pair:
  # 1 in 3 pairs for l = 3, 1 in 6 for l = 4; an odd count (l = 5..8: 3) never.
  n = 6000
  for size, rate in ((3, 1 / 3), (4, 1 / 6), (7, 0.0)):
    share = _is_identity(_steps(walks.random_walk(2, size, n))).mean()
    assert abs(share - rate) <= 4 * math.sqrt(rate * (1 - rate) / n), (size, share)


def test_without_identity_steps_both_walks_are_the_same():
  for size in (2, 7):  # one transposition per step; three
    out = walks.random_walks(3, size, 50)
    np.testing.assert_array_equal(out["nonidentity"], out["paper"])


def test_walks_are_seeded_and_reproducible():
  a = walks.random_walks(7, 16, 50)
  b = walks.random_walks(7, 16, 50)
  c = walks.random_walks(8, 16, 50)
  for w in walks.WALKS:
    np.testing.assert_array_equal(a[w], b[w])
    assert not np.array_equal(a[w], c[w])
  # A group of another size draws another walk, not a truncation of this one.
  assert not np.array_equal(walks.random_walk(7, 17, 50)[:, :16], a["paper"])
  # One walk alone is the same as drawn with the other.
  np.testing.assert_array_equal(walks.random_walk(7, 16, 50, "nonidentity"), a["nonidentity"])
  np.testing.assert_array_equal(walks.random_walks(7, 16, 50, ("paper",))["paper"], a["paper"])


def test_seed_walks_stack_every_seeds_walks():
  seeds = [4, 0, 9]
  got = walks.seed_walks(seeds, 8, 30)
  assert got.shape == (3, 2, 31, 8)
  for s, seed in enumerate(seeds):
    want = walks.random_walks(seed, 8, 30)
    for i, w in enumerate(walks.WALKS):
      np.testing.assert_array_equal(got[s, i], want[w])
  np.testing.assert_array_equal(walks.seed_walks(np.array(seeds), 8, 30), got)  # cached or not
  np.testing.assert_array_equal(walks.seed_walks(seeds, 8, 30, ("paper",))[:, 0], got[:, 0])


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="at least 2 neurons, got 1"):
    walks.random_walk(0, 1, 5)
  with pytest.raises(ValueError, match=r"unknown walk \['lazy'\]"):
    walks.random_walks(0, 4, 5, ("paper", "lazy"))
