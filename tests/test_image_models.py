import jax
import jax.numpy as jnp
import pytest

from manifold_metric import models

X = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))


@pytest.mark.parametrize("kind,sizes,shapes", [
    ("mlp", {}, {"hiddens_0": (192, 20)}),
    ("cnn", {}, {"convs_0": (3, 3, 3, 8), "convs_1": (3, 3, 8, 32), "fc": (512, 256)}),
    ("cnn", {"channels": [16, 64, 64, 64]}, {"convs_3": (3, 3, 64, 64), "fc": (1024, 256)}),
])
def test_paper_shapes(kind, sizes, shapes):
  arch = models.default_arch(kind, 10, **sizes)
  params = models.init(arch, jax.random.key(0), X.shape[1:])["params"]
  for name, shape in shapes.items():
    assert params[name]["kernel"].shape == shape
  assert models.logits(arch, {"params": params}, X).shape == (4, 10)


def test_resnet18_has_eight_blocks_and_projections():
  arch = models.default_arch("resnet18", 10, stages=[8, 16, 16, 32],
                             mids=[[8, 8], [16, 16], [16, 16], [32, 32]])
  v = models.init(arch, jax.random.key(0), X.shape[1:])
  blocks = [k for k in v["params"] if k.startswith("blocks_")]
  assert len(blocks) == 8
  assert [b for b in blocks if "proj_conv" in v["params"][b]] == ["blocks_2", "blocks_4",
                                                                  "blocks_6"]
  assert "batch_stats" in v


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet18"])
def test_probe_is_the_loss(kind):
  sizes = {"stages": [4, 4, 4, 4], "mids": [[4], [4], [4], [4]]} if kind == "resnet18" else {}
  arch = models.default_arch(kind, 10, **sizes)
  v = models.init(arch, jax.random.key(0), X.shape[1:])
  y = jnp.arange(4)
  probe = models.probe(arch)
  loss = probe.head(v, probe.stem(v, (X, y)), (X, y))
  expected = models.cross_entropy(models.logits(arch, v, X, train=models.has_batch_norm(arch)), y)
  assert jnp.abs(loss - expected) < 1e-5
  assert models.probe(arch) is probe  # cached: jitted users compile once


def test_unknown_kind_is_named():
  with pytest.raises(ValueError, match="unknown model kind 'vit'"):
    models.build({"kind": "vit", "num_classes": 10})
