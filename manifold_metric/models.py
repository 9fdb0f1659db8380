"""Image models (Flax linen), their neuron groups, and the stem/head split.

An architecture is plain data, e.g. {"kind": "cnn", "channels": [8, 32],
"dense": 256, "num_classes": 10}; expansions return a new one. Every model has
`stem` (the first layer's pre-activation, computed once per barrier set) and
`head` (the rest), so `__call__ = head o stem`.
"""

import functools
import json
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from manifold_metric import archs
from manifold_metric.permutations import Axis, PermSpec

KINDS = archs.IMAGE_KINDS


class MLP(nn.Module):
  hidden: tuple[int, ...]
  num_classes: int

  def setup(self):
    self.hiddens = [nn.Dense(h) for h in self.hidden]
    self.out = nn.Dense(self.num_classes)

  def stem(self, x, train=False):
    return self.hiddens[0](x.reshape(x.shape[0], -1))

  def head(self, z, train=False):
    for layer in self.hiddens[1:]:
      z = layer(nn.relu(z))
    return self.out(nn.relu(z))

  def __call__(self, x, train=False):
    return self.head(self.stem(x, train), train)


class CNN(nn.Module):
  """C(c0)-...-C(ck)-MaxPool(2)-F(dense)-F(classes), 3x3 convs, ReLU."""
  channels: tuple[int, ...]
  dense: int
  num_classes: int

  def setup(self):
    self.convs = [nn.Conv(c, (3, 3), padding="SAME") for c in self.channels]
    self.fc = nn.Dense(self.dense)
    self.out = nn.Dense(self.num_classes)

  def stem(self, x, train=False):
    return self.convs[0](x)

  def head(self, z, train=False):
    for conv in self.convs[1:]:
      z = conv(nn.relu(z))
    z = nn.max_pool(nn.relu(z), (2, 2), strides=(2, 2))
    z = nn.relu(self.fc(z.reshape(z.shape[0], -1)))
    return self.out(z)

  def __call__(self, x, train=False):
    return self.head(self.stem(x, train), train)


def _bn():
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5)


class Block(nn.Module):
  """ResNet basic block; a 1x1 projection where the shape changes."""
  mid: int
  out: int
  stride: int
  project: bool

  def setup(self):
    s = (self.stride, self.stride)
    self.conv1 = nn.Conv(self.mid, (3, 3), s, padding="SAME", use_bias=False)
    self.bn1 = _bn()
    self.conv2 = nn.Conv(self.out, (3, 3), padding="SAME", use_bias=False)
    self.bn2 = _bn()
    if self.project:
      self.proj_conv = nn.Conv(self.out, (1, 1), s, use_bias=False)
      self.proj_bn = _bn()

  def __call__(self, x, train):
    ura = not train
    y = nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    if self.project:
      x = self.proj_bn(self.proj_conv(x), use_running_average=ura)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """CIFAR ResNet18: 3x3 stem, four stages of two blocks, strides 1-2-2-2."""
  stages: tuple[int, ...]
  mids: tuple[tuple[int, ...], ...]
  num_classes: int

  def setup(self):
    self.stem_conv = nn.Conv(self.stages[0], (3, 3), padding="SAME", use_bias=False)
    self.stem_bn = _bn()
    blocks, width = [], self.stages[0]
    for s, (out, mids) in enumerate(zip(self.stages, self.mids)):
      for b, mid in enumerate(mids):
        stride = 2 if (s > 0 and b == 0) else 1
        blocks.append(Block(mid, out, stride, stride != 1 or width != out))
        width = out
    self.blocks = blocks
    self.out = nn.Dense(self.num_classes)

  def stem(self, x, train=False):
    return self.stem_conv(x)

  def head(self, z, train=False):
    z = nn.relu(self.stem_bn(z, use_running_average=not train))
    for block in self.blocks:
      z = block(z, train)
    return self.out(jnp.mean(z, axis=(1, 2)))

  def __call__(self, x, train=False):
    return self.head(self.stem(x, train), train)


def _check(arch: dict) -> None:
  kind = arch.get("kind")
  if kind not in KINDS:
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def build(arch: dict) -> nn.Module:
  _check(arch)
  k = arch["num_classes"]
  if arch["kind"] == "mlp":
    return MLP(tuple(arch["hidden"]), k)
  if arch["kind"] == "cnn":
    return CNN(tuple(arch["channels"]), arch["dense"], k)
  return ResNet18(tuple(arch["stages"]), tuple(tuple(m) for m in arch["mids"]), k)


def default_arch(kind: str, num_classes: int, **sizes) -> dict:
  """The paper's shapes (Table 2, `archs.IMAGE_DEFAULTS`), overridable per size key."""
  if kind not in KINDS:
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
  return {**archs.sizes({"kind": kind, **sizes}), "num_classes": num_classes}


def has_batch_norm(arch: dict) -> bool:
  return arch["kind"] == "resnet18"


def init(arch: dict, key, input_shape) -> dict:
  """Variables for inputs of `input_shape` (one example, NHWC without N)."""
  x = jnp.zeros((1, *input_shape), jnp.float32)
  return dict(build(arch).init(key, x, train=False))


def logits(arch: dict, variables, x, train: bool = False):
  """Logits; with train=True BatchNorm uses the batch's statistics."""
  return _logits(json.dumps(arch, sort_keys=True), train)(variables, x)


@functools.lru_cache(maxsize=None)
def _logits(arch_json: str, train: bool):
  arch = json.loads(arch_json)
  module = build(arch)
  if train and has_batch_norm(arch):
    return jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"])[0])
  return jax.jit(lambda v, x: module.apply(v, x, train=train))


def cross_entropy(logits_, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits_, labels).mean()


class Probe(NamedTuple):
  """What the barrier engine needs: the loss as head(stem(x)).

  stem(variables, batch) -> z, the permuted layer's pre-activation.
  head(variables, z, batch) -> mean loss over the batch.
  BatchNorm models use batch statistics in both, so the statistics of a
  midpoint model are re-estimated on the batch (as Git Re-Basin resets them).
  """
  stem: Callable[[Any, Any], Any]
  head: Callable[[Any, Any, Any], Any]


def probe(arch: dict) -> Probe:
  """The model's Probe; cached so that jitted users compile once per arch."""
  return _probe(json.dumps(arch, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _probe(arch_json: str) -> Probe:
  arch = json.loads(arch_json)
  module = build(arch)
  train = has_batch_norm(arch)
  mutable = ["batch_stats"] if train else False

  def apply(variables, *args, method):
    out = module.apply(variables, *args, train=train, method=method, mutable=mutable)
    return out[0] if train else out

  def stem(variables, batch):
    return apply(variables, batch[0], method="stem")

  def head(variables, z, batch):
    return cross_entropy(apply(variables, z, method="head"), batch[1])

  return Probe(stem, head)


# ---------------------------------------------------------------- neuron groups
# As in Git Re-Basin's permutation specs, each layer helper lists the axes the
# layer puts in each group, as (group, Axis) pairs; group None is no neuron
# group (the image's channels, the classes). `_groups` collects a network's
# layers into PermSpecs, each group's axes in layer order.


def _conv(name, p_in, p_out):  # kernel (h, w, in, out)
  k = f"params/{name}/kernel"
  return [(p_in, Axis(k, 2, "in")), (p_out, Axis(k, 3))]


def _dense(name, p_in, p_out):  # kernel (in, out); a flattened conv map's in is pixels x channels
  k = f"params/{name}/kernel"
  return [(p_in, Axis(k, 0, "in")), (p_out, Axis(k, 1)), *_bias(name, p_out)]


def _bias(name, p):
  return [(p, Axis(f"params/{name}/bias", 0))]


def _norm(name, p):  # BatchNorm: affine parameters and running statistics
  return [(p, Axis(f"{c}/{name}/{leaf}", 0)) for c, leaf in (
      ("params", "scale"), ("params", "bias"),
      ("batch_stats", "mean"), ("batch_stats", "var"))]


def _block(name, p_in, p_out):
  """A basic block reading residual stream p_in and writing p_out; its inner
  group is `<name>_mid`. A 1x1 projection joins the streams where they differ."""
  mid = f"{name}_mid"
  proj = (_conv(f"{name}/proj_conv", p_in, p_out) + _norm(f"{name}/proj_bn", p_out)
          if p_in != p_out else [])
  return (_conv(f"{name}/conv1", p_in, mid) + _norm(f"{name}/bn1", mid) + proj
          + _conv(f"{name}/conv2", mid, p_out) + _norm(f"{name}/bn2", p_out))


def _groups(sizes: dict[str, int], *layers) -> dict[str, PermSpec]:
  """A PermSpec per group of `sizes`, in its order; the first is the stem's
  output (stem_axis=-1). Naming a group not in `sizes` raises a KeyError."""
  axes = {g: [] for g in sizes}
  for g, axis in (pair for layer in layers for pair in layer):
    if g is not None:
      axes[g].append(axis)
  return {g: PermSpec(n, tuple(axes[g]), -1 if i == 0 else None)
          for i, (g, n) in enumerate(sizes.items())}


def neuron_groups(arch: dict) -> dict[str, PermSpec]:
  """Every permutable (and widenable) neuron group, first layer first.

  The first group's neurons are the stem's output channels (stem_axis=-1).
  """
  _check(arch)
  if arch["kind"] == "mlp":
    hs = [f"hiddens_{i}" for i in range(len(arch["hidden"]))]
    return _groups(dict(zip(hs, arch["hidden"])),
                   *(_dense(h, p, h) for h, p in zip(hs, [None, *hs])),
                   _dense("out", hs[-1], None))
  if arch["kind"] == "cnn":
    cs = [f"convs_{i}" for i in range(len(arch["channels"]))]
    return _groups(dict(zip(cs, arch["channels"])),
                   *(_conv(c, p, c) + _bias(c, c) for c, p in zip(cs, [None, *cs])),
                   _dense("fc", cs[-1], None))  # its outputs are no group (yet)
  return _resnet_groups(arch)


def _resnet_groups(arch: dict) -> dict[str, PermSpec]:
  """Stage s's residual stream is group stage_s (stage 0's includes the stem);
  block b's inner channels (conv1 out -> conv2 in) are blocks_b_mid."""
  blocks = [(s, mid) for s, mids in enumerate(arch["mids"]) for mid in mids]  # (stage, width)
  reads = [0, *(s for s, _ in blocks)]  # block b reads block b - 1's stream, the head the last
  # Order: the stem's stream first (first_group), then each stage's inner groups
  # and its stream (widen_all draws one key per group in this order).
  sizes = {"stage_0": arch["stages"][0]}
  for s, width in enumerate(arch["stages"]):
    sizes |= {f"blocks_{b}_mid": mid for b, (t, mid) in enumerate(blocks) if t == s}
    sizes |= {f"stage_{s}": width}
  return _groups(sizes,
                 _conv("stem_conv", None, "stage_0"), _norm("stem_bn", "stage_0"),
                 *(_block(f"blocks_{b}", f"stage_{reads[b]}", f"stage_{s}")
                   for b, (s, _) in enumerate(blocks)),
                 _dense("out", f"stage_{reads[-1]}", None))


def first_group(arch: dict) -> PermSpec:
  """The group the metric permutes: the first hidden layer / conv / stem."""
  return next(iter(neuron_groups(arch).values()))
