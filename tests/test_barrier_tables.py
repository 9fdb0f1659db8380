"""Barrier tables: Algorithm 1's barriers of every model, group and walk, each
model on its seed's batch along its seed's walks, groups followed through an
expansion's lineage; and Figure 1's loss curves."""

import jax
import numpy as np
import pytest

from manifold_metric import (
    archs,
    barrier,
    barrier_tables,
    data,
    expansion,
    image_models,
    permutations,
    probe,
    tracks,
    walks,
)

SEEDS = [4, 9]
N, BATCH = 12, 48
BASE = archs.MLP((6, 5), 10)
DEEPEN = {"kind": "deepen", "after": 0, "count": 1}  # hiddens_1 becomes hiddens_2


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def _variables(arch, seed):
  shapes = jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), (8, 8, 1)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: np.asarray(
          rng.normal(0, np.prod(s.shape[:-1]) ** -0.5 if len(s.shape) > 1 else 0.3, s.shape),
          s.dtype,
      ),
      shapes,
  )


def _stack(*trees):
  return jax.tree.map(lambda *a: np.stack(a), *trees)


@pytest.fixture(scope="module")
def models():
  """phi* of both seeds; the deepened candidate of seed 9 at epochs 0 and 3
  and of seed 4 at epoch 3 (instances of an architecture in any order)."""
  phi = [_variables(BASE, s) for s in SEEDS]
  deep_arch, theta = expansion.expand_seeds(BASE, _stack(*phi), DEEPEN, SEEDS)
  theta = [jax.tree.map(lambda a: np.asarray(a)[i], theta) for i in range(2)]
  moved = [
      jax.tree.map(
          lambda a: a + 0.05 * np.random.default_rng(i).normal(size=a.shape).astype(a.dtype), t
      )
      for i, t in enumerate(theta)
  ]
  _, lineage = archs.expanded(BASE, DEEPEN)
  return [
      barrier_tables.Models(
          "base",
          BASE,
          _stack(*phi),
          np.array([0, 1]),
          np.array([0, 0]),
          {g: g for g in BASE.groups()},
      ),
      barrier_tables.Models(
          "deeper",
          deep_arch,
          _stack(theta[1], moved[1], moved[0]),
          np.array([1, 1, 0]),
          np.array([0, 3, 3]),
          lineage,
      ),
  ], {"phi": phi, "theta": theta, "moved": moved}


def test_table_holds_each_models_barriers_on_its_seeds_batch_and_walks(digits, models):
  ms, v = models
  table = barrier_tables.table(
      ms, digits, setting="s", seeds=SEEDS, groups=list(BASE.groups()), n=N, batch_size=BATCH
  )
  assert list(table.columns) == [
      "setting",
      "model",
      "expansion",
      "group",
      "walk",
      "seed",
      "epoch",
      "node",
      "barrier",
      "resolution",
  ]
  assert len(table) == (2 + 3) * 2 * len(walks.WALKS) * N
  assert set(table.group) == {"hiddens_0", "hiddens_1"}  # the base's names
  assert (table.setting == "s").all() and (table.model == "mlp").all()
  batches = tracks.metric_batches(BASE, digits, SEEDS, BATCH)
  deep_arch = ms[1].arch
  cases = [
      ("base", 4, 0, BASE, v["phi"][0]),
      ("base", 9, 0, BASE, v["phi"][1]),
      ("deeper", 9, 0, deep_arch, v["theta"][1]),
      ("deeper", 9, 3, deep_arch, v["moved"][1]),
      ("deeper", 4, 3, deep_arch, v["moved"][0]),
  ]
  for expansion_, seed, epoch, arch, model in cases:
    s = SEEDS.index(seed)
    for group in BASE.groups():
      name = ms[1].lineage[group] if expansion_ == "deeper" else group
      spec = probe.spec(arch, name)
      want, tau = barrier.barrier_sets(
          probe.probe(arch, name),
          spec,
          _stack(model),
          jax.tree.map(lambda a: a[s : s + 1], batches),
          walks.seed_walks([seed], spec.size, N),
          with_resolution=True,
      )
      for w, walk in enumerate(walks.WALKS):
        rows = table[
            (table.expansion == expansion_)
            & (table.seed == seed)
            & (table.epoch == epoch)
            & (table.group == group)
            & (table.walk == walk)
        ]
        assert rows.node.tolist() == list(range(1, N + 1))
        np.testing.assert_allclose(
            rows.barrier,
            want[0, w],
            rtol=0,
            atol=tau[0],
            err_msg=f"{expansion_} {seed} {epoch} {group} {walk}",
        )
        np.testing.assert_allclose(rows.resolution, tau[0], rtol=1e-5)
  # The deepened theta^(0) is phi*'s function, and identity layers leave the barriers
  # of every group alone: the rows of seed 9 agree with phi*'s.
  cand = table[(table.expansion == "deeper") & (table.epoch == 0)].barrier.to_numpy()
  base = table[(table.expansion == "base") & (table.seed == 9)].barrier.to_numpy()
  np.testing.assert_allclose(cand, base, rtol=0, atol=float(table.resolution.max()))
  moved = table[(table.expansion == "deeper") & (table.epoch == 3) & (table.seed == 9)]
  assert not np.allclose(moved.barrier.to_numpy(), base, atol=1e-4)  # not vacuous


def test_a_diverged_model_is_named(digits, models):
  ms, v = models
  broken = jax.tree.map(lambda a: np.asarray(a).copy(), ms[1].variables)
  broken["params"]["out"]["bias"][2] = np.nan
  bad = barrier_tables.Models(
      "deeper", ms[1].arch, broken, ms[1].seed_of, ms[1].epochs, ms[1].lineage
  )
  with pytest.raises(RuntimeError, match="deeper seed 4 epoch 3: non-finite barriers"):
    barrier_tables.table(
        [ms[0], bad], digits, setting="s", seeds=SEEDS, groups=["hiddens_0"], n=N, batch_size=BATCH
    )


def test_loss_curves_are_the_loss_along_each_pair_of_the_walk(digits, models):
  _, v = models
  alphas = [0.0, 0.25, 0.5, 1.0]
  curves = barrier_tables.loss_curves(
      BASE, _stack(*v["phi"]), digits, seeds=SEEDS, pairs=3, alphas=alphas, batch_size=BATCH
  )
  assert list(curves.columns) == ["seed", "width", "pair", "alpha", "loss"]
  assert len(curves) == 2 * 3 * 4 and (curves.width == 6).all()
  batches = tracks.metric_batches(BASE, digits, SEEDS, BATCH)
  spec = probe.spec(BASE)
  loss = jax.jit(lambda w, b: tracks.cross_entropy(image_models.apply(BASE, w, b[0]), b[1]))
  for s, seed in enumerate(SEEDS):
    nodes = walks.random_walk(seed, spec.size, 3)  # the paper's walk of the seed
    batch = jax.tree.map(lambda a: a[s], batches)
    for i in range(3):
      a = permutations.permute(spec, v["phi"][s], nodes[i])
      b = permutations.permute(spec, v["phi"][s], nodes[i + 1])
      got = curves[(curves.seed == seed) & (curves.pair == i)].sort_values("alpha")
      want = [float(loss(barrier.interpolate(b, a, alpha), batch)) for alpha in alphas]
      np.testing.assert_allclose(got.loss, want, rtol=1e-5)
      # Both ends are permutations of phi*: its loss.
      np.testing.assert_allclose(got.loss.iloc[[0, -1]], float(loss(v["phi"][s], batch)), rtol=1e-5)
