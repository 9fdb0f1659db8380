"""Image models (Flax linen) and their neuron groups.

Built from an `archs.MLP`, `archs.CNN` or `archs.ResNet18`. Every model has
`stem` (the first layer's pre-activation, computed once per barrier set) and
`head` (the rest), so `__call__ = head o stem`.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from manifold_metric import archs
from manifold_metric.permutations import Axis, PermSpec

# Up to this many output features a Dense layer computes its weight gradient
# transposed (`_narrow_dot`).
NARROW = 16


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _narrow_matmul(x, kernel, precision):
  return jnp.matmul(x, kernel, precision=precision)


def _narrow_fwd(x, kernel, precision):
  return jnp.matmul(x, kernel, precision=precision), (x, kernel)


def _narrow_bwd(precision, res, g):
  x, kernel = res
  lead = tuple(range(x.ndim - 1))
  # XLA:CPU computes dL/dkernel = x^T g, an (in, out) result with few
  # columns, 2-7x slower than the same products as the (out, in) result
  # g^T x (benchmarks/README.md); the barrier keeps XLA from folding the
  # transpose back into the slow form.
  grad_t = jax.lax.optimization_barrier(jnp.tensordot(g, x, axes=(lead, lead), precision=precision))
  return jnp.matmul(g, kernel.T, precision=precision), grad_t.T


_narrow_matmul.defvjp(_narrow_fwd, _narrow_bwd)


def _narrow_dot(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` as nn.Dense calls it, with `_narrow_bwd`'s gradient."""
  if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or preferred_element_type:
    raise ValueError(f"_narrow_dot is a Dense layer's product, not {dimension_numbers}")
  return _narrow_matmul(x, kernel, precision)


def dense(features: int) -> nn.Dense:
  """nn.Dense; where it has at most NARROW outputs, with `_narrow_dot`."""
  return nn.Dense(features, dot_general=_narrow_dot if features <= NARROW else None)


class MLP(nn.Module):
  hidden: tuple[int, ...]
  num_classes: int

  def setup(self):
    self.hiddens = [dense(h) for h in self.hidden]
    self.out = dense(self.num_classes)

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
    self.fc = dense(self.dense)
    self.out = dense(self.num_classes)

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
    self.out = dense(self.num_classes)

  def stem(self, x, train=False):
    return self.stem_conv(x)

  def head(self, z, train=False):
    z = nn.relu(self.stem_bn(z, use_running_average=not train))
    for block in self.blocks:
      z = block(z, train)
    return self.out(jnp.mean(z, axis=(1, 2)))

  def __call__(self, x, train=False):
    return self.head(self.stem(x, train), train)


def build(arch: archs.Arch) -> nn.Module:
  """The Flax module of an image architecture."""
  if not isinstance(arch, (archs.MLP, archs.CNN, archs.ResNet18)):
    raise ValueError(f"not an image architecture: {arch}")
  if arch.num_classes is None:
    raise ValueError(f"{arch} has no num_classes: see archs.with_data")
  if isinstance(arch, archs.MLP):
    return MLP(arch.hidden, arch.num_classes)
  if isinstance(arch, archs.CNN):
    return CNN(arch.channels, arch.dense, arch.num_classes)
  return ResNet18(arch.stages, arch.mids, arch.num_classes)


def has_batch_norm(arch: archs.Arch) -> bool:
  return isinstance(arch, archs.ResNet18)


def init(arch: archs.Arch, key, input_shape) -> dict:
  """Variables for inputs of `input_shape` (one example, NHWC without N)."""
  x = jnp.zeros((1, *input_shape), jnp.float32)
  return dict(build(arch).init(key, x, train=False))


def apply(arch: archs.Arch, variables, *args, train: bool = False, method=None):
  """module.apply; with train=True BatchNorm uses (and updates, discarded
  here) the batch's statistics."""
  module = build(arch)
  if train and has_batch_norm(arch):
    return module.apply(variables, *args, train=True, method=method, mutable=["batch_stats"])[0]
  return module.apply(variables, *args, train=train, method=method)


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
  return [
      (p, Axis(f"{c}/{name}/{leaf}", 0))
      for c, leaf in (
          ("params", "scale"),
          ("params", "bias"),
          ("batch_stats", "mean"),
          ("batch_stats", "var"),
      )
  ]


def _block(name, p_in, p_out):
  """A basic block reading residual stream p_in and writing p_out; its inner
  group is `<name>_mid`. A 1x1 projection joins the streams where they differ."""
  mid = f"{name}_mid"
  proj = (
      _conv(f"{name}/proj_conv", p_in, p_out) + _norm(f"{name}/proj_bn", p_out)
      if p_in != p_out
      else []
  )
  return (
      _conv(f"{name}/conv1", p_in, mid)
      + _norm(f"{name}/bn1", mid)
      + proj
      + _conv(f"{name}/conv2", mid, p_out)
      + _norm(f"{name}/bn2", p_out)
  )


def _groups(sizes: dict[str, int], *layers) -> dict[str, PermSpec]:
  """A PermSpec per group of `sizes`, in its order; the first is the stem's
  output (stem_axis=-1). Naming a group not in `sizes` raises a KeyError."""
  axes = {g: [] for g in sizes}
  for g, axis in (pair for layer in layers for pair in layer):
    if g is not None:
      axes[g].append(axis)
  return {
      g: PermSpec(n, tuple(axes[g]), -1 if i == 0 else None)
      for i, (g, n) in enumerate(sizes.items())
  }


def neuron_groups(arch: archs.Arch) -> dict[str, PermSpec]:
  """Every permutable (and widenable) neuron group, in `arch.groups()` order.

  The first group's neurons are the stem's output channels (stem_axis=-1).
  """
  sizes = arch.groups()
  if isinstance(arch, archs.MLP):
    hs = list(sizes)
    return _groups(
        sizes, *(_dense(h, p, h) for h, p in zip(hs, [None, *hs])), _dense("out", hs[-1], None)
    )
  if isinstance(arch, archs.CNN):
    cs = list(sizes)
    return _groups(
        sizes,
        *(_conv(c, p, c) + _bias(c, c) for c, p in zip(cs, [None, *cs])),
        _dense("fc", cs[-1], None),
    )  # its outputs are no group (yet)
  return _resnet_groups(arch, sizes)


def _resnet_groups(arch: archs.ResNet18, sizes: dict[str, int]) -> dict[str, PermSpec]:
  """Stage s's residual stream is group stage_s (stage 0's includes the stem);
  block b's inner channels (conv1 out -> conv2 in) are blocks_b_mid."""
  blocks = [s for s, mids in enumerate(arch.mids) for _ in mids]  # each block's stage
  reads = [0, *blocks]  # block b reads block b - 1's stream, the head the last
  return _groups(
      sizes,
      _conv("stem_conv", None, "stage_0"),
      _norm("stem_bn", "stage_0"),
      *(_block(f"blocks_{b}", f"stage_{reads[b]}", f"stage_{s}") for b, s in enumerate(blocks)),
      _dense("out", f"stage_{reads[-1]}", None),
  )
