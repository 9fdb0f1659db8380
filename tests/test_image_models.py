"""The image models: the paper's shapes (Table 2), ResNet18's blocks, the
probe's split of the loss, and BatchNorm in train and eval mode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manifold_metric import archs, image_models, probe, tracks

X = np.asarray(jax.random.normal(jax.random.key(0), (4, 8, 8, 3)))
Y = np.arange(4, dtype=np.int32)
TINY_RESNET = {"stages": [4, 4, 4, 4], "mids": [[4], [4], [4], [4]]}


def _arch(kind, **sizes):
  return archs.with_data(archs.make({"kind": kind, **sizes}), num_classes=10)


def _shapes(arch):
  """The variables' shapes, traced (compiling Flax's initializers is slow)."""
  return jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), X.shape[1:]))


def _variables(arch, seed=0):
  """Random variables of the model's shapes; BatchNorm statistics away from
  their initial 0 and 1, so that train and eval mode differ."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if len(s.shape) > 1:
      return rng.normal(0, np.prod(s.shape[:-1]) ** -0.5, s.shape)
    if "var" in name or "scale" in name:
      return rng.uniform(0.5, 1.5, s.shape)
    return 0.2 * rng.normal(size=s.shape)

  return jax.tree_util.tree_map_with_path(
      lambda p, s: np.asarray(draw(p, s), s.dtype), _shapes(arch)
  )


@functools.partial(jax.jit, static_argnames=("arch", "train"))
def _logits(arch, v, x, train=False):
  return image_models.apply(arch, v, x, train=train)


@pytest.mark.parametrize(
    "kind,sizes,shapes",
    [
        ("mlp", {}, {"hiddens_0": (192, 20), "out": (20, 10)}),
        ("cnn", {}, {"convs_0": (3, 3, 3, 8), "convs_1": (3, 3, 8, 32), "fc": (512, 256)}),
        ("cnn", {"channels": [16, 64, 64, 64]}, {"convs_3": (3, 3, 64, 64), "fc": (1024, 256)}),
    ],
)
def test_paper_shapes(kind, sizes, shapes):
  arch = _arch(kind, **sizes)
  params = _shapes(arch)["params"]
  for name, shape in shapes.items():
    assert params[name]["kernel"].shape == shape
  assert _logits(arch, _variables(arch), X).shape == (4, 10)


def test_resnet18_has_eight_blocks_and_projections():
  arch = _arch("resnet18", stages=[8, 16, 16, 32], mids=[[8, 8], [16, 16], [16, 16], [32, 32]])
  v = _shapes(arch)
  blocks = [k for k in v["params"] if k.startswith("blocks_")]
  assert len(blocks) == 8
  assert [b for b in blocks if "proj_conv" in v["params"][b]] == [
      "blocks_2",
      "blocks_4",
      "blocks_6",
  ]
  assert v["params"]["blocks_3"]["conv1"]["kernel"].shape == (3, 3, 16, 16)
  assert "batch_stats" in v and image_models.has_batch_norm(arch)
  assert not image_models.has_batch_norm(_arch("cnn"))


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet18"])
def test_probe_is_the_loss_for_every_group(kind):
  sizes = TINY_RESNET if kind == "resnet18" else {"cnn": {"channels": [4, 6]}}.get(kind, {})
  arch = _arch(kind, **sizes)
  v = _variables(arch)
  bn = image_models.has_batch_norm(arch)
  want = float(tracks.cross_entropy(_logits(arch, v, X, train=bn), Y))
  groups = list(arch.groups())
  for group in dict.fromkeys([groups[0], groups[len(groups) // 2], groups[-1]]):
    p = probe.probe(arch, group)
    got = float(jax.jit(p.loss)(v, (X, Y)))
    assert got == pytest.approx(want, rel=1e-5), group
    assert probe.probe(arch, group) is p  # cached: jitted users compile once
    assert probe.spec(arch, group) == image_models.neuron_groups(arch)[group]
  assert probe.spec(arch) == probe.spec(arch, archs.first_group(arch))
  with pytest.raises(ValueError, match=f"{kind} has no neuron group 'ffn_0'"):
    probe.spec(arch, "ffn_0")


def test_batch_norm_uses_batch_statistics_in_train_mode_only():
  arch = _arch("resnet18", **TINY_RESNET)
  v = _variables(arch)
  train, evaluate = _logits(arch, v, X, train=True), _logits(arch, v, X)
  assert float(jnp.abs(train - evaluate).max()) > 1e-2
  # Eval mode reads the running statistics: changing them changes the output...
  moved = {**v, "batch_stats": jax.tree.map(lambda a: a * 2.0, v["batch_stats"])}
  assert float(jnp.abs(_logits(arch, moved, X) - evaluate).max()) > 1e-3
  # ...train mode does not, and apply() discards the statistics it would update.
  np.testing.assert_allclose(_logits(arch, moved, X, train=True), train, rtol=1e-5, atol=1e-5)
  # The module itself does update them (the trainer keeps them, `tracks.train_loss`).
  _, new = image_models.build(arch).apply(v, X, train=True, mutable=["batch_stats"])
  assert not np.allclose(new["batch_stats"]["stem_bn"]["mean"], v["batch_stats"]["stem_bn"]["mean"])


def test_the_default_probe_is_the_first_groups():
  arch = _arch("mlp")
  assert probe.probe(arch) is probe.probe(arch, archs.first_group(arch))


def test_build_needs_the_datas_classes():
  with pytest.raises(ValueError, match="has no num_classes: see archs.with_data"):
    image_models.build(archs.make({"kind": "cnn"}))


def test_build_names_a_non_image_architecture():
  with pytest.raises(ValueError, match="not an image architecture"):
    image_models.build(archs.BERT(1, 8, 2, (8,), 50, 8))


@pytest.mark.parametrize("features", [3, image_models.NARROW])
def test_narrow_dense_has_plain_dense_value_gradient_and_hessian(features):
  # A loss with curvature, through vmap, on a batch with two leading axes:
  # value, gradient and a Hessian-vector product (GraSP's forward over
  # reverse) equal those of nn.Dense up to float32 summation order.
  import flax.linen as nn

  narrow, plain = image_models.dense(features), nn.Dense(features)
  assert narrow.dot_general is not None and plain.dot_general is None
  x = jax.random.normal(jax.random.key(1), (2, 5, 7, 6))
  params = jax.vmap(lambda k: plain.init(k, x[0]))(jax.random.split(jax.random.key(2), 2))

  def loss(module, p, xs):
    return jnp.sum(jnp.tanh(module.apply(p, xs)) ** 2)

  def hvp(module, p, xs):
    g = lambda q: jax.grad(loss, argnums=1)(module, q, xs)
    return jax.jvp(g, (p,), (g(p),))[1]

  def close(a, b):
    # Summation order moves an entry by a few float32 eps of the terms
    # summed, not of the entry: where they cancel (HVP entries of 0.6 among
    # ones of 350) only the array's scale bounds the rounding. A wrong
    # product (e.g. an untransposed gradient) is off by O(1) of that scale.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))

  for f in (loss, jax.grad(loss, argnums=1), hvp):
    got = jax.jit(jax.vmap(functools.partial(f, narrow)))(params, x)
    want = jax.jit(jax.vmap(functools.partial(f, plain)))(params, x)
    jax.tree.map(close, got, want)


def test_only_narrow_layers_take_the_transposed_gradient():
  assert image_models.dense(image_models.NARROW + 1).dot_general is None
  with pytest.raises(ValueError, match="Dense layer's product"):
    image_models._narrow_dot(jnp.ones((2, 3)), jnp.ones((2, 4)), (((0,), (0,)), ((), ())))
