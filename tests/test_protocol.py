"""The protocol shared by every model of one seed (Section 4.1, Appendix A.2):
one batch and the same walks for phi* and every candidate of the seed, and the
candidates theta^(0) expanded from phi*, checked to preserve its performance."""

import jax
import numpy as np
import pytest

from manifold_metric import archs, bert, data, expansion, image_models, tracks, walks


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def _variables(arch, seed):
  """Random variables of the model's shapes (traced, not compiled)."""
  if archs.is_lm(arch):
    shapes = jax.eval_shape(lambda: bert.init(arch, jax.random.key(0)))
  else:
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


def test_every_model_of_a_seed_is_probed_on_the_same_batch_and_walks(digits):
  """phi* and its candidates (other widths, other kinds) get the seed's batch;
  groups of one size get the seed's walks, whatever the model."""
  seeds = [2, 7]
  base = tracks.metric_batches(archs.MLP((4,), 10), digits, seeds, 32)
  for arch in (archs.MLP((9, 3), 10), archs.CNN((4,), 8, 10)):
    other = tracks.metric_batches(arch, digits, seeds, 32)
    for a, b in zip(base, other):
      np.testing.assert_array_equal(a, b)
  assert not np.array_equal(base[0][0], base[0][1])  # seeds differ
  w = walks.seed_walks(seeds, 8, 20)
  np.testing.assert_array_equal(walks.seed_walks(np.array(seeds), 8, 20), w)
  np.testing.assert_array_equal(walks.seed_walks(seeds[1:], 8, 20)[0], w[1])  # per seed
  assert not np.array_equal(walks.seed_walks(seeds, 9, 20)[:, :, :, :8], w)  # per size


@pytest.fixture(scope="module")
def phi(digits):
  arch = archs.MLP((6,), 10)
  stacked = _stack(*(_variables(arch, s) for s in range(3)))
  return arch, stacked, [r["performance"] for r in tracks.validate(arch, stacked, digits, {})]


def test_candidates_are_each_seeds_expansion_checked_to_preserve(digits, phi):
  arch, stacked, performance = phi
  spec = {"kind": "widen_first", "factor": 2}
  seeds = [3, 5, 8]
  new_arch, theta = expansion.candidates(
      arch, stacked, spec, seeds, digits, {}, performance, "expansion x2 of s"
  )
  want_arch, want = expansion.expand_seeds(arch, stacked, spec, seeds)
  assert new_arch == want_arch == archs.MLP((12,), 10)
  for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  after = [r["performance"] for r in tracks.validate(new_arch, theta, digits, {})]
  assert after == performance
  # A recorded A(phi*) that the expansion does not reproduce names the seed.
  wrong = [performance[0], performance[1] + 0.01, performance[2]]
  with pytest.raises(
      RuntimeError,
      match=r"expansion x2 of s, seed 5, changed the validation "
      r"performance .* not function-preserving",
  ):
    expansion.candidates(arch, stacked, spec, seeds, digits, {}, wrong, "expansion x2 of s")


def test_setting_candidates_expand_every_entry_and_name_it(digits, phi):
  arch, stacked, performance = phi
  metas = [{"performance": a, "seed": s} for a, s in zip(performance, [3, 5, 8])]
  specs = {"w7": {"kind": "widen_first", "width": 7}, "d": {"kind": "deepen", "after": 0}}
  got = expansion.setting_candidates(arch, stacked, metas, specs, [3, 5, 8], digits, {}, "s")
  assert list(got) == ["w7", "d"]
  for e, spec in specs.items():
    want_arch, want = expansion.expand_seeds(arch, stacked, spec, [3, 5, 8])
    assert got[e][0] == want_arch
    for a, b in zip(jax.tree.leaves(got[e][1]), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  metas[1]["performance"] += 0.01
  with pytest.raises(RuntimeError, match="expansion w7 of s, seed 5"):
    expansion.setting_candidates(arch, stacked, metas, specs, [3, 5, 8], digits, {}, "s")


def test_an_expansion_that_changes_the_function_is_caught(digits, phi, monkeypatch):
  arch, stacked, performance = phi
  real = expansion.expand_seeds

  def broken(arch, variables, spec, seeds):
    new_arch, theta = real(arch, variables, spec, seeds)
    out = np.array(theta["params"]["out"]["bias"])
    out[2] += np.arange(10) * 5.0  # seed 8's model now prefers the last classes
    return new_arch, {"params": {**theta["params"], "out": {**theta["params"]["out"], "bias": out}}}

  monkeypatch.setattr(expansion, "expand_seeds", broken)
  with pytest.raises(RuntimeError, match="seed 8"):
    expansion.candidates(
        arch, stacked, {"kind": "widen_first", "width": 7}, [3, 5, 8], digits, {}, performance, "e"
    )


def test_bert_candidates_are_preserved_to_float32_round_off():
  rng = np.random.default_rng(0)
  ds = {
      "train": rng.integers(3, 40, (20, 12)).astype(np.int32),
      "val": rng.integers(3, 40, (10, 12)).astype(np.int32),
      "vocab_size": 40,
  }
  arch = archs.BERT(1, 8, 2, (12,), 40, 12)
  stacked = _stack(*(_variables(arch, s) for s in range(2)))
  hp = {"eval_batch_size": 5}
  performance = [r["performance"] for r in tracks.validate(arch, stacked, ds, hp)]
  new_arch, theta = expansion.candidates(
      arch, stacked, {"kind": "widen_ffn", "width": 20}, [0, 1], ds, hp, performance, "ffn20"
  )
  assert new_arch.ffn == (20,)
  after = [r["performance"] for r in tracks.validate(new_arch, theta, ds, hp)]
  np.testing.assert_allclose(after, performance, rtol=1e-4)
