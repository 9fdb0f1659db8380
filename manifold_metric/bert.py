"""Encoder-only BERT for masked language modelling (Section 4.4, A.2.2).

Follows the Hugging Face BertForMaskedLM layout: token + learned position
embeddings and LayerNorm; post-LN encoder layers (self-attention, then a GELU
FFN, each added to the residual stream and layer-normed); an MLM head (dense,
GELU, LayerNorm) whose output projection is tied to the token embedding (plus
a per-token bias), as in BERT. Inputs are fixed-length chunks without padding,
so there is no attention mask, no token types and no dropout (runs are
deterministic given the seed).

An architecture is plain data, e.g. {"kind": "bert", "layers": 2, "hidden":
128, "heads": 2, "ffn": [512, 512], "vocab_size": V, "max_len": 512}; `ffn`
holds each layer's intermediate width, so Net2Net can widen every layer.
Attention projections keep heads as an explicit axis (q/k/v kernels
(hidden, heads, head_dim), output kernel (heads, head_dim, hidden)), so a head
permutation is a permutation of one axis.
"""

import copy
import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from manifold_metric import archs
from manifold_metric.models import Probe
from manifold_metric.permutations import Axis, PermSpec

_init = nn.initializers.normal(0.02)  # BERT's initializer range
_ln = functools.partial(nn.LayerNorm, epsilon=1e-12)


def _gelu(x):
  return nn.gelu(x, approximate=False)  # BERT's erf GELU


class SelfAttention(nn.Module):
  heads: int
  head_dim: int

  def setup(self):
    qkv = functools.partial(nn.DenseGeneral, (self.heads, self.head_dim), kernel_init=_init)
    self.query, self.key, self.value = qkv(), qkv(), qkv()
    self.out = nn.DenseGeneral(self.heads * self.head_dim, axis=(-2, -1), kernel_init=_init)

  def __call__(self, x):
    o = nn.dot_product_attention(self.query(x), self.key(x), self.value(x))
    return self.out(o)


class EncoderLayer(nn.Module):
  """Post-LN layer, split where the FFN's intermediate neurons live."""
  heads: int
  head_dim: int
  ffn: int

  def setup(self):
    self.attention = SelfAttention(self.heads, self.head_dim)
    self.ln1 = _ln()
    self.ffn_in = nn.Dense(self.ffn, kernel_init=_init)
    self.ffn_out = nn.Dense(self.heads * self.head_dim, kernel_init=_init)
    self.ln2 = _ln()

  def attend(self, x):
    """The residual stream entering the FFN."""
    return self.ln1(x + self.attention(x))

  def expand(self, r):
    """The FFN's intermediate pre-activation."""
    return self.ffn_in(r)

  def contract(self, r, z):
    return self.ln2(r + self.ffn_out(_gelu(z)))

  def __call__(self, x):
    r = self.attend(x)
    return self.contract(r, self.expand(r))


class BERT(nn.Module):
  """Token ids (batch, seq) -> MLM logits (batch, seq, vocab).

  __call__ = encode o embed = head(stem(ids, i), ids, i) for every layer i.
  """
  vocab_size: int
  max_len: int
  hidden: int
  heads: int
  ffn: tuple[int, ...]

  def setup(self):
    self.tokens = nn.Embed(self.vocab_size, self.hidden, embedding_init=_init)
    self.positions = self.param("positions", _init, (self.max_len, self.hidden))
    self.ln = _ln()
    self.layers = [EncoderLayer(self.heads, self.hidden // self.heads, f) for f in self.ffn]
    self.mlm_dense = nn.Dense(self.hidden, kernel_init=_init)
    self.mlm_ln = _ln()
    self.mlm_bias = self.param("mlm_bias", nn.initializers.zeros, (self.vocab_size,))

  def embed(self, ids):
    """The input of layer 0."""
    if ids.shape[-1] > self.max_len:
      raise ValueError(f"sequence length {ids.shape[-1]} exceeds max_len {self.max_len}")
    return self.ln(self.tokens(ids) + self.positions[:ids.shape[-1]])

  def mlm(self, x, positions=None):
    if positions is not None:  # only these flat positions (a loss's masked ones)
      x = x.reshape(-1, x.shape[-1])[positions]
    x = self.mlm_ln(_gelu(self.mlm_dense(x)))
    return self.tokens.attend(x) + self.mlm_bias  # tied output projection

  def encode(self, x, positions=None):
    """Layer 0's input -> logits (at `positions` of the flattened batch only)."""
    for layer in self.layers:
      x = layer(x)
    return self.mlm(x, positions)

  def _residual(self, ids, layer):
    x = self.embed(ids)
    for lyr in self.layers[:layer]:
      x = lyr(x)
    return self.layers[layer].attend(x)

  def stem(self, ids, layer=0):
    """Layer `layer`'s FFN pre-activation (its neurons on the last axis)."""
    return self.layers[layer].expand(self._residual(ids, layer))

  def head(self, z, ids, layer=0, positions=None):
    """The rest, given the stem's z. The residual stream entering the FFN does
    not depend on the FFN's weights, so it is recomputed from ids; inside
    barrier.barrier_set it is loop-invariant and XLA hoists it out of the loop
    (checked in the compiled HLO)."""
    x = self.layers[layer].contract(self._residual(ids, layer), z)
    for lyr in self.layers[layer + 1:]:
      x = lyr(x)
    return self.mlm(x, positions)

  def __call__(self, ids):
    return self.encode(self.embed(ids))


# ------------------------------------------------------------------ arch, init


def arch(preset: str, vocab_size: int, max_len: int = 512, **overrides) -> dict:
  """A preset's arch; `ffn` may be overridden by one width or one per layer."""
  if preset not in archs.BERT_PRESETS:
    raise ValueError(f"unknown BERT preset {preset!r}; expected one of {sorted(archs.BERT_PRESETS)}")
  a = {"kind": "bert", **archs.BERT_PRESETS[preset], **overrides,
       "vocab_size": vocab_size, "max_len": max_len}
  if isinstance(a["ffn"], int):
    a["ffn"] = [a["ffn"]] * a["layers"]
  _check(a)
  return a


def _check(arch: dict) -> None:
  if arch.get("kind") != "bert":
    raise ValueError(f"not a BERT arch: kind {arch.get('kind')!r}")
  if arch["hidden"] % arch["heads"]:
    raise ValueError(f"hidden {arch['hidden']} is not a multiple of heads {arch['heads']}")
  if len(arch["ffn"]) != arch["layers"]:
    raise ValueError(f"ffn lists {len(arch['ffn'])} widths for {arch['layers']} layers")


def build(arch: dict) -> BERT:
  _check(arch)
  return BERT(arch["vocab_size"], arch["max_len"], arch["hidden"], arch["heads"],
              tuple(arch["ffn"]))


def init(arch: dict, key) -> dict:
  return dict(_initializer(json.dumps(arch, sort_keys=True))(key))


@functools.lru_cache(maxsize=None)
def _initializer(arch_json: str):
  module = build(json.loads(arch_json))
  return jax.jit(lambda key: module.init(key, jnp.zeros((1, 1), jnp.int32)))


def logits(arch: dict, variables, ids):
  return build(arch).apply(variables, ids)


def mlm_loss(logits_, labels, weights):
  """Cross-entropy averaged over the positions with weight (the masked ones)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_, labels)
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# --------------------------------------------------------------- neuron groups


def neuron_groups(arch: dict) -> dict[str, PermSpec]:
  """"ffn_<i>" (layer i's FFN intermediate neurons) for every layer, then
  "heads_0" (layer 0's attention heads; permutable, never widened)."""
  _check(arch)
  groups = {}
  for i, width in enumerate(arch["ffn"]):
    p = f"params/layers_{i}"
    groups[f"ffn_{i}"] = PermSpec(width, (
        Axis(f"{p}/ffn_in/kernel", 1), Axis(f"{p}/ffn_in/bias", 0),
        Axis(f"{p}/ffn_out/kernel", 0, "in")), -1 if i == 0 else None)
  p = "params/layers_0/attention"
  groups["heads_0"] = PermSpec(arch["heads"], (
      *(Axis(f"{p}/{n}/kernel", 1) for n in ("query", "key", "value")),
      *(Axis(f"{p}/{n}/bias", 0) for n in ("query", "key", "value")),
      Axis(f"{p}/out/kernel", 0)), None)
  return groups


def _group(arch: dict, group: str) -> PermSpec:
  groups = neuron_groups(arch)
  if group not in groups:
    raise ValueError(f"unknown BERT neuron group {group!r}; expected one of {list(groups)}")
  return groups[group]


def spec(arch: dict, group: str = "ffn_0") -> PermSpec:
  """The group's spec as `probe(arch, group)` sees it: an FFN probe's stem is
  that layer's pre-activation (neurons on axis -1); the heads probe's stem is
  the embedding output, which does not carry the heads."""
  return dataclasses.replace(_group(arch, group),
                             stem_axis=-1 if group.startswith("ffn_") else None)


def probe_batch(batch):
  """An MLM batch (inputs, labels, weights) as a probe takes it: (inputs, the
  flat indices of the masked positions, their labels). The probe projects only
  those onto the vocabulary, which the loss ignores elsewhere; with 15%
  masking that is most of a small model's forward pass."""
  inputs, labels, weights = (np.asarray(a) for a in batch)
  positions = np.flatnonzero(weights.reshape(-1) > 0).astype(np.int32)
  if positions.size == 0:
    raise ValueError("the MLM batch has no masked position: the loss is undefined")
  return inputs, positions, labels.reshape(-1)[positions]


def probe(arch: dict, group: str = "ffn_0") -> Probe:
  """MLM-loss Probe for batches from `probe_batch`; cached per (arch, group)
  so that jitted users (barrier.barrier_set) compile once."""
  _group(arch, group)
  return _probe(json.dumps(arch, sort_keys=True), group)


@functools.lru_cache(maxsize=None)
def _probe(arch_json: str, group: str) -> Probe:
  module = build(json.loads(arch_json))
  if group.startswith("ffn_"):
    layer = int(group.split("_")[1])

    def stem(variables, batch):
      return module.apply(variables, batch[0], layer=layer, method="stem")

    def logits_(variables, z, batch):
      return module.apply(variables, z, batch[0], layer=layer, positions=batch[1],
                          method="head")
  else:  # heads_0

    def stem(variables, batch):
      return module.apply(variables, batch[0], method="embed")

    def logits_(variables, z, batch):
      return module.apply(variables, z, positions=batch[1], method="encode")

  def head(variables, z, batch):  # batch from probe_batch: the labels are its last entry
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_(variables, z, batch), batch[2])
    return ce.mean()

  return Probe(stem, head)
