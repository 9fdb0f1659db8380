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

from manifold_metric.permutations import Axis, PermSpec

KINDS = ("mlp", "cnn", "resnet18")


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
  """The paper's shapes (Table 2), overridable per size key."""
  base = {
      "mlp": {"hidden": [20]},
      "cnn": {"channels": [8, 32], "dense": 256},
      "resnet18": {"stages": [64, 128, 256, 512],
                   "mids": [[64, 64], [128, 128], [256, 256], [512, 512]]},
  }
  if kind not in base:
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
  return {"kind": kind, **base[kind], **sizes, "num_classes": num_classes}


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


def _conv(name, role):  # kernel (h, w, in, out)
  return Axis(f"params/{name}/kernel", 3 if role == "out" else 2, role)


def _bn_axes(name):
  return tuple(Axis(f"{c}/{name}/{p}", 0) for c, p in (
      ("params", "scale"), ("params", "bias"),
      ("batch_stats", "mean"), ("batch_stats", "var")))


def neuron_groups(arch: dict) -> dict[str, PermSpec]:
  """Every permutable (and widenable) neuron group, first layer first.

  The first group's neurons are the stem's output channels (stem_axis=-1).
  """
  _check(arch)
  kind = arch["kind"]
  groups = {}
  if kind == "mlp":
    hidden = arch["hidden"]
    for i, h in enumerate(hidden):
      nxt = f"hiddens_{i + 1}" if i + 1 < len(hidden) else "out"
      groups[f"hiddens_{i}"] = PermSpec(h, (
          Axis(f"params/hiddens_{i}/kernel", 1), Axis(f"params/hiddens_{i}/bias", 0),
          Axis(f"params/{nxt}/kernel", 0, "in")), -1 if i == 0 else None)
  elif kind == "cnn":
    chans = arch["channels"]
    for i, c in enumerate(chans):
      # The last conv feeds flatten -> fc: its channels repeat once per pixel.
      consumer = (_conv(f"convs_{i + 1}", "in") if i + 1 < len(chans)
                  else Axis("params/fc/kernel", 0, "in"))
      groups[f"convs_{i}"] = PermSpec(c, (
          _conv(f"convs_{i}", "out"), Axis(f"params/convs_{i}/bias", 0), consumer),
          -1 if i == 0 else None)
  else:
    groups.update(_resnet_groups(arch))
  return groups


def _resnet_groups(arch: dict) -> dict[str, PermSpec]:
  """Stage s's residual stream is one group (stage 0's includes the stem);
  each block's inner channels (conv1 out -> conv2 in) are another."""
  groups, b = {}, 0
  stream = [_conv("stem_conv", "out"), *_bn_axes("stem_bn")]
  for s, (out, mids) in enumerate(zip(arch["stages"], arch["mids"])):
    for j, mid in enumerate(mids):
      name = f"blocks_{b}"
      stream.append(_conv(f"{name}/conv1", "in"))
      if s > 0 and j == 0:
        stream.append(_conv(f"{name}/proj_conv", "in"))
        groups[f"stage_{s - 1}"] = PermSpec(arch["stages"][s - 1], tuple(stream),
                                            -1 if s == 1 else None)
        stream = [_conv(f"{name}/proj_conv", "out"), *_bn_axes(f"{name}/proj_bn")]
      stream += [_conv(f"{name}/conv2", "out"), *_bn_axes(f"{name}/bn2")]
      groups[f"{name}_mid"] = PermSpec(mid, (
          _conv(f"{name}/conv1", "out"), *_bn_axes(f"{name}/bn1"),
          _conv(f"{name}/conv2", "in")), None)
      b += 1
  stream.append(Axis("params/out/kernel", 0, "in"))
  last = len(arch["stages"]) - 1
  groups[f"stage_{last}"] = PermSpec(arch["stages"][last], tuple(stream),
                                     -1 if last == 0 else None)
  return dict(sorted(groups.items(), key=lambda kv: kv[0] != "stage_0"))


def first_group(arch: dict) -> PermSpec:
  """The group the metric permutes: the first hidden layer / conv / stem."""
  return next(iter(neuron_groups(arch).values()))
