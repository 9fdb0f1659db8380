"""The probe: a model's loss split where a neuron group lives, as the barrier
engine and the proxies evaluate it.

stem(variables, batch) -> z, the pre-activation that carries the group (or,
for groups the stem does not carry, the first layer's); head(variables, z,
batch) -> the mean loss over the batch, so loss = head(stem(x)). BatchNorm
models use batch statistics in both, so the statistics of a midpoint model are
re-estimated on the batch (as Git Re-Basin resets them).
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from manifold_metric import archs, tracks
from manifold_metric.permutations import PermSpec


class Split(NamedTuple):
  """The head at the group's consumer, a dense layer fed act(z): head(v, z,
  batch) = rest(v, carry, out(v, zr), batch) with (zr, carry) = rows(v, z,
  batch) (zr: z at the rows the rest reads) and out(v, zr) = act(zr) @ v[kernel]
  + bias, the group on the kernel's axis 0. The head reads no other leaf of
  the group. A midpoint that moves few neurons changes `out` by those
  neurons' rows alone (`barrier`)."""

  rows: Callable[[Any, Any, Any], Any]
  act: Callable[[Any], Any]
  out: Callable[[Any, Any], Any]
  kernel: str
  rest: Callable[[Any, Any, Any, Any], Any]


class Probe(NamedTuple):
  stem: Callable[[Any, Any], Any]
  head: Callable[[Any, Any, Any], Any]
  split: Split | None = None

  def loss(self, variables, batch):
    return self.head(variables, self.stem(variables, batch), batch)


def probe(arch: archs.Arch, group: str | None = None) -> Probe:
  """The probe of a neuron group (None: the metric's, the first group);
  cached, so that jitted users compile once per (arch, group)."""
  return _probe(arch, group or archs.first_group(arch))


@functools.cache
def _probe(arch: archs.Arch, group: str) -> Probe:
  track = tracks.of(arch)
  split = track.split(arch, group)
  return Probe(track.stem(arch, group), track.head(arch, group), split and Split(**split))


def spec(arch: archs.Arch, group: str | None = None) -> PermSpec:
  """The group's permutation spec, whose stem_axis matches `probe(arch, group)`."""
  group = group or archs.first_group(arch)
  groups = tracks.of(arch).neuron_groups(arch)
  if group not in groups:
    raise ValueError(f"{arch.kind} has no neuron group {group!r}; it has {list(groups)}")
  return groups[group]
