"""Random walks over the permutations of one neuron group (Appendix A.2.1).

Node 0 is the identity; node i + 1 is node i with ceil(log2 l) transpositions
of two distinct neurons, pairs drawn with replacement. Drawn with
replacement, an even number of transpositions can undo itself (two draws of
the same pair): with 2 transpositions one step in three is the identity for
l = 3, one in six for l = 4, whose barrier is exactly 0 and which counts as an edge at any
threshold. The "nonidentity" walk redraws such a step until it moves (and
is otherwise the same walk, step for step), so that m counts connectivity,
not the walk's own repeats. The paper's walk is the default.

Walks are drawn with numpy on the host, vectorized over steps: a walk of
1000 steps takes milliseconds, where a jitted scan took a second to compile.
"""

import functools
import math

import numpy as np

WALKS = ("paper", "nonidentity")


def num_swaps(size: int) -> int:
  """ceil(log2 l) transpositions per step."""
  return max(1, math.ceil(math.log2(size)))


def _steps(rng, n: int, size: int) -> np.ndarray:
  """n steps, each the composition of num_swaps(size) transpositions of two
  distinct neurons: (n, size) index arrays tau, node i + 1 = node i[tau_i]."""
  k = num_swaps(size)
  a = rng.integers(0, size, (n, k))
  b = (a + rng.integers(1, size, (n, k))) % size
  tau = np.broadcast_to(np.arange(size), (n, size)).copy()
  rows = np.arange(n)
  for j in range(k):  # the swaps of a step, in order, for every step at once
    ta, tb = tau[rows, a[:, j]].copy(), tau[rows, b[:, j]].copy()
    tau[rows, a[:, j]], tau[rows, b[:, j]] = tb, ta
  return tau


def _nodes(tau: np.ndarray) -> np.ndarray:
  """Nodes 0..n from the steps: node i = tau_0[tau_1[...tau_{i-1}]], the
  prefix compositions by doubling (log2 n vectorized rounds)."""
  nodes, d, n = tau, 1, len(tau)
  while d < n:
    nodes = np.concatenate([nodes[:d], np.take_along_axis(nodes[:-d], nodes[d:], axis=1)])
    d *= 2
  return np.concatenate([np.arange(tau.shape[1], dtype=np.int32)[None], nodes])


def random_walks(seed: int, size: int, n: int, walks=WALKS) -> dict[str, np.ndarray]:
  """Nodes 0..n of random walks of one seed, each an (n + 1, size) int32
  array, node 0 the identity.

  Args:
    seed: the walks' seed (numpy's generator from [seed, size]).
    size: neurons in the group (at least 2).
    n: steps.
    walks: which of WALKS: "paper" (Appendix A.2.1), "nonidentity" (the
      same walk, except that a step that composes to the identity is redrawn
      until it does not).
  """
  if size < 2:
    raise ValueError(f"a random walk needs at least 2 neurons, got {size}")
  unknown = set(walks) - set(WALKS)
  if unknown:
    raise ValueError(f"unknown walk {sorted(unknown)}; expected one of {WALKS}")
  tau = _steps(np.random.default_rng([seed, size]), n, size).astype(np.int32)
  out = {"paper": _nodes(tau)} if "paper" in walks else {}
  if "nonidentity" in walks:
    redraw, moved = np.random.default_rng([seed, size, 1]), tau.copy()
    still = np.flatnonzero((tau == np.arange(size)).all(axis=1))
    if not still.size and "paper" in out:  # nothing to redraw: the same walk
      out["nonidentity"] = out["paper"]
    else:
      while still.size:  # each round redraws the steps still the identity
        moved[still] = _steps(redraw, still.size, size)
        still = still[(moved[still] == np.arange(size)).all(axis=1)]
      out["nonidentity"] = _nodes(moved)
  return {w: out[w] for w in walks}


def random_walk(seed: int, size: int, n: int, walk: str = "paper") -> np.ndarray:
  """One walk of `random_walks`."""
  return random_walks(seed, size, n, (walk,))[walk]


def seed_walks(seeds, size: int, n: int, walks=WALKS) -> np.ndarray:
  """Every walk of every seed: an (S, W, n + 1, size) array, the same for
  every model and epoch of a seed whose group has this size (cached: one
  job draws them once)."""
  return _seed_walks(tuple(int(s) for s in seeds), size, n, tuple(walks))


@functools.lru_cache(maxsize=16)
def _seed_walks(seeds: tuple, size: int, n: int, walks: tuple) -> np.ndarray:
  return np.stack([np.stack(list(random_walks(s, size, n, walks).values())) for s in seeds])
