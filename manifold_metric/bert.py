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

import functools
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax

from manifold_metric import archs, text
from manifold_metric.permutations import Axis, PermSpec

_init = nn.initializers.normal(0.02)  # BERT's initializer range
_ln = functools.partial(nn.LayerNorm, epsilon=1e-12)


def gelu(x):
  return nn.gelu(x, approximate=False)  # BERT's erf GELU


def _at(x, positions):
  """The rows of x at flat positions of its (batch, seq) axes; all of x if None."""
  return x if positions is None else x.reshape(-1, x.shape[-1])[positions]


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
    return self.ln2(r + self.ffn_out(gelu(z)))

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
    return self.ln(self.tokens(ids) + self.positions[: ids.shape[-1]])

  def mlm(self, x):
    x = self.mlm_ln(gelu(self.mlm_dense(x)))
    return self.tokens.attend(x) + self.mlm_bias  # tied output projection

  def encode(self, x, positions=None):
    """Layer 0's input -> logits (at `positions` of the flattened batch only)."""
    return self._ffn_on(0, self.layers[0].attend(x), None, positions)

  def _ffn_on(self, layer, r, z, positions):
    """Logits at `positions` from layer `layer`'s FFN input r and its
    pre-activation z (None: computed from r). Everything after the last
    layer's attention is per token, so it runs at `positions` only: a loss
    over the masked positions skips the last FFN and the vocabulary
    projection elsewhere."""
    r, z = self._rows(layer, r, z, positions)
    z = self.layers[layer].expand(r) if z is None else z
    return self.after_ffn(r, self.ffn_out(z, layer), layer, positions)

  def _rows(self, layer, r, z, positions):
    """r and z at the rows the rest of the model reads: `positions` after
    the last layer's attention, every row before."""
    if layer == len(self.layers) - 1:
      return _at(r, positions), (None if z is None else _at(z, positions))
    return r, z

  def after_ffn(self, r, y, layer, positions=None):
    """Logits from layer `layer`'s FFN input r and FFN output y (at the rows
    of `ffn_rows`)."""
    x = self.layers[layer].ln2(r + y)
    if layer == len(self.layers) - 1:
      return self.mlm(x)
    return self._ffn_on(layer + 1, self.layers[layer + 1].attend(x), None, positions)

  def ffn_rows(self, z, ids, layer=0, positions=None):
    """(z, r): layer `layer`'s FFN pre-activation z (`stem`) and its input r
    at the rows the rest of the model reads, as `after_ffn` takes them."""
    r, z = self._rows(layer, self._residual(ids, layer), z, positions)
    return z, r

  def ffn_out(self, z, layer=0):
    """Layer `layer`'s FFN output from its pre-activation z."""
    return self.layers[layer].ffn_out(gelu(z))

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
    return self._ffn_on(layer, self._residual(ids, layer), z, positions)

  def __call__(self, ids, positions=None):
    return self.encode(self.embed(ids), positions)


# ------------------------------------------------------------------ build, init


def build(arch: archs.BERT) -> BERT:
  """The Flax module of a BERT architecture."""
  if arch.vocab_size is None:
    raise ValueError(f"{arch} has no vocab_size: see archs.with_data")
  return BERT(arch.vocab_size, arch.max_len, arch.hidden, arch.heads, arch.ffn)


def init(arch: archs.BERT, key) -> dict:
  return dict(build(arch).init(key, jnp.zeros((1, 1), jnp.int32)))


def mlm_loss(logits, labels, weights):
  """Cross-entropy averaged over the positions with weight (the masked ones)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def mask_capacity(n: int, rate: float = text.MASK_RATE) -> int:
  """Room for masked positions in a training batch of n tokens: the mean
  plus 10 standard deviations of Binomial(n, rate), at most n. More are
  masked with probability below exp(-n KL) (Chernoff; 1.5e-18 at 512
  tokens, less for more); `masked_positions` then makes the loss NaN, which
  `train.fit` stops on, never a loss over a cut set of positions."""
  return min(n, math.ceil(n * rate + 10 * math.sqrt(n * rate * (1 - rate))))


def masked_positions(weights, capacity: int):
  """The masked positions of a batch, for a loss over them alone.

  Projecting only the masked positions onto the vocabulary gives the MLM
  loss of every position (the others have weight 0) at a fraction of its
  cost: with 15% masking and a vocabulary larger than the model, the output
  projection and softmax are most of a small BERT's forward pass.

  Args:
    weights: (batch, seq) 1.0 at masked positions, as `text.mask_tokens`.
    capacity: the positions returned (`mask_capacity`), fixed for jit.

  Returns:
    (positions, w): (capacity,) flat indices of the masked positions in
    order, padded with position 0, and their weights (0 for padding; NaN
    everywhere if more than `capacity` positions are masked).
  """
  flat = weights.reshape(-1)
  (positions,) = jnp.nonzero(flat > 0, size=capacity, fill_value=0)
  count = jnp.sum(flat > 0)
  w = jnp.where(jnp.arange(capacity) < count, flat[positions], 0.0)
  return positions, jnp.where(count > capacity, jnp.nan, w)


# --------------------------------------------------------------- neuron groups


def neuron_groups(arch: archs.BERT) -> dict[str, PermSpec]:
  """ "ffn_<i>" (layer i's FFN intermediate neurons) for every layer, then
  "heads_0" (layer 0's attention heads; permutable, never widened), as
  `arch.groups()` names them. FFN group i's stem output is layer i's
  pre-activation (stem_axis -1, see `stem`); the heads' stem is the embedding
  output, which does not carry them."""
  sizes = arch.groups()
  groups = {}
  for i in range(arch.layers):
    p = f"params/layers_{i}"
    groups[f"ffn_{i}"] = PermSpec(
        sizes[f"ffn_{i}"],
        (
            Axis(f"{p}/ffn_in/kernel", 1),
            Axis(f"{p}/ffn_in/bias", 0),
            Axis(f"{p}/ffn_out/kernel", 0, "in"),
        ),
        -1,
    )
  p = "params/layers_0/attention"
  groups["heads_0"] = PermSpec(
      arch.heads,
      (
          *(Axis(f"{p}/{n}/kernel", 1) for n in ("query", "key", "value")),
          *(Axis(f"{p}/{n}/bias", 0) for n in ("query", "key", "value")),
          Axis(f"{p}/out/kernel", 0),
      ),
      None,
  )
  return groups


def probe_batches(batch, length: int | None = None):
  """MLM batches (inputs, labels, weights), stacked over seeds (S, B, L), as
  the probe takes them: (inputs, the flat indices of the masked positions,
  their labels, weights). The probe projects only those positions onto the
  vocabulary, which the loss ignores elsewhere; with 15% masking that is
  most of a small model's forward pass. Seeds mask different numbers of
  positions: each row is padded to `length` (default: the most any seed
  has) with position 0 at weight 0."""
  inputs, labels, weights = (np.asarray(a) for a in batch)
  flat = weights.reshape(len(weights), -1) > 0
  counts = flat.sum(axis=1)
  if (counts == 0).any():
    raise ValueError("an MLM batch has no masked position: the loss is undefined")
  length = int(counts.max()) if length is None else length
  # Masked positions first, in order, then the rest (padding, weight 0).
  order = np.argsort(~flat, axis=1, kind="stable")[:, :length].astype(np.int32)
  w = np.take_along_axis(flat, order, axis=1).astype(np.float32)
  positions = np.where(w > 0, order, 0).astype(np.int32)
  lab = np.take_along_axis(labels.reshape(len(labels), -1), positions, axis=1)
  return inputs, positions, lab.astype(np.int32), w
