"""Architectures as frozen values, their neuron groups and Net2Net shapes.

An architecture is one immutable, hashable value (`MLP`, `CNN`, `ResNet18`,
`BERT`): usable as a static argument of `jax.jit` and as a cache key, made
and validated in one place (`make`, `__post_init__`), with the paper's sizes
(Tables 2 and 3) stated once (`IMAGE_DEFAULTS`, `BERT_PRESETS`). Readable
without JAX, so that a config can be checked before any job runs: which
neuron groups a model has (`groups`), and what shape an expansion gives it
(`expanded`).

A config `model` entry names a kind and overrides sizes, e.g. {"kind": "cnn",
"channels": [4, 32]}; the data's sizes (classes, vocabulary, sequence length)
are filled in by `with_data` once the dataset is known.
"""

import dataclasses
import math
from typing import ClassVar

IMAGE_DEFAULTS = {
    "mlp": {"hidden": (20,)},
    "cnn": {"channels": (8, 32), "dense": 256},
    "resnet18": {
        "stages": (64, 128, 256, 512),
        "mids": ((64, 64), (128, 128), (256, 256), (512, 512)),
    },
}
BERT_PRESETS = {
    "tinybert": {"layers": 2, "hidden": 128, "heads": 2, "ffn": 512},
    "minibert": {"layers": 4, "hidden": 256, "heads": 4, "ffn": 1024},
}
IMAGE_KINDS = tuple(IMAGE_DEFAULTS)
KINDS = (*IMAGE_KINDS, "bert")
# The size keys a config model entry of each kind may set.
SIZE_KEYS = {
    "mlp": ("hidden",),
    "cnn": ("channels", "dense"),
    "resnet18": ("stages", "mids"),
    "bert": ("preset", "layers", "heads", "ffn"),
}
SPLITS = ("uniform", "random")
STEP_KINDS = ("widen", "widen_all", "deepen")
SHORTHANDS = ("widen_first", "widen_all", "deepen", "widen_ffn")


def _positive(name: str, values) -> None:
  if not values or any(not isinstance(v, int) or v < 1 for v in values):
    raise ValueError(f"{name} must be positive integers, got {list(values)}")


@dataclasses.dataclass(frozen=True)
class MLP:
  """Dense layers of `hidden` units (ReLU), then the classes."""

  hidden: tuple[int, ...]
  num_classes: int | None = None
  kind: ClassVar[str] = "mlp"

  def __post_init__(self):
    _positive("mlp hidden widths", self.hidden)

  def groups(self) -> dict[str, int]:
    return {f"hiddens_{i}": w for i, w in enumerate(self.hidden)}


@dataclasses.dataclass(frozen=True)
class CNN:
  """C(c0)-...-C(ck)-MaxPool(2)-F(dense)-F(classes), 3x3 convs (Table 2)."""

  channels: tuple[int, ...]
  dense: int
  num_classes: int | None = None
  kind: ClassVar[str] = "cnn"

  def __post_init__(self):
    _positive("cnn channels", self.channels)
    _positive("cnn dense width", (self.dense,))

  def groups(self) -> dict[str, int]:
    return {f"convs_{i}": w for i, w in enumerate(self.channels)}


@dataclasses.dataclass(frozen=True)
class ResNet18:
  """CIFAR ResNet18: `stages` residual widths, `mids` each block's inner width."""

  stages: tuple[int, ...]
  mids: tuple[tuple[int, ...], ...]
  num_classes: int | None = None
  kind: ClassVar[str] = "resnet18"

  def __post_init__(self):
    if len(self.stages) != 4 or len(self.mids) != 4:
      raise ValueError(
          f"resnet18 has 4 stages, got stages {list(self.stages)} and "
          f"{len(self.mids)} lists of mids"
      )
    _positive("resnet18 stage widths", self.stages)
    for m in self.mids:
      _positive("resnet18 block widths", m)

  def groups(self) -> dict[str, int]:
    """Stage s's residual stream is group stage_s (stage 0's includes the
    stem); block b's inner channels are blocks_b_mid. Order: the stem's stream
    first, then each stage's blocks and its stream."""
    out, b = {"stage_0": self.stages[0]}, 0
    for s, (width, mids) in enumerate(zip(self.stages, self.mids)):
      for mid in mids:
        out[f"blocks_{b}_mid"] = mid
        b += 1
      out[f"stage_{s}"] = width
    return out


@dataclasses.dataclass(frozen=True)
class BERT:
  """Encoder-only BERT for masked LM; `ffn` holds each layer's FFN width."""

  layers: int
  hidden: int
  heads: int
  ffn: tuple[int, ...]
  vocab_size: int | None = None
  max_len: int | None = None
  kind: ClassVar[str] = "bert"

  def __post_init__(self):
    _positive("bert layers, hidden and heads", (self.layers, self.hidden, self.heads))
    _positive("bert ffn widths", self.ffn)
    if self.hidden % self.heads:
      raise ValueError(f"bert hidden {self.hidden} is not a multiple of heads {self.heads}")
    if len(self.ffn) != self.layers:
      raise ValueError(f"bert ffn lists {len(self.ffn)} widths for {self.layers} layers")

  def groups(self) -> dict[str, int]:
    """Every layer's FFN neurons, then layer 0's attention heads (permutable,
    never widened)."""
    return {**{f"ffn_{i}": w for i, w in enumerate(self.ffn)}, "heads_0": self.heads}


Arch = MLP | CNN | ResNet18 | BERT
_CLASSES = {c.kind: c for c in (MLP, CNN, ResNet18, BERT)}


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def make(model: dict) -> Arch:
  """The architecture of a config `model` entry, the paper's sizes filled in.

  Args:
    model: {"kind": ..., size overrides}; BERT's `ffn` may be one width for
      every layer or a list, and `preset` picks Table 3's sizes (tinybert).

  Returns:
    The architecture without the data's sizes (see `with_data`).

  Raises:
    ValueError: naming the kind, key or size that is wrong.
  """
  kind = model.get("kind")
  if kind not in KINDS:
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
  extra = sorted(set(model) - {"kind", *SIZE_KEYS[kind]})
  if extra:
    raise ValueError(f"a {kind} model takes {', '.join(SIZE_KEYS[kind])}, not {', '.join(extra)}")
  sizes = {k: _tuples(v) for k, v in model.items() if k not in ("kind", "preset")}
  if kind != "bert":
    return _CLASSES[kind](**{**IMAGE_DEFAULTS[kind], **sizes})
  preset = model.get("preset", "tinybert")
  if preset not in BERT_PRESETS:
    raise ValueError(f"unknown BERT preset {preset!r}; expected one of {sorted(BERT_PRESETS)}")
  sizes = {**BERT_PRESETS[preset], **sizes}
  if isinstance(sizes["ffn"], int):
    sizes["ffn"] = (sizes["ffn"],) * sizes["layers"]
  return BERT(**sizes)


def with_data(
    arch: Arch,
    *,
    num_classes: int | None = None,
    vocab_size: int | None = None,
    max_len: int | None = None,
) -> Arch:
  """The architecture for a dataset: classes for images, vocabulary and
  sequence length for BERT."""
  if arch.kind == "bert":
    return dataclasses.replace(arch, vocab_size=int(vocab_size), max_len=int(max_len))
  return dataclasses.replace(arch, num_classes=int(num_classes))


def to_dict(arch: Arch) -> dict:
  """Plain data (for checkpoints and tables): the kind and every field."""
  return {"kind": arch.kind, **dataclasses.asdict(arch)}


def from_dict(d: dict) -> Arch:
  """The inverse of `to_dict`."""
  d = dict(d)
  kind = d.pop("kind", None)
  if kind not in _CLASSES:
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
  return _CLASSES[kind](**{k: _tuples(v) for k, v in d.items()})


def is_lm(arch: Arch) -> bool:
  """True for the Transformer track (masked language modelling)."""
  return arch.kind == "bert"


def first_group(arch: Arch) -> str:
  """The group the metric permutes and `widen_first` widens: the first hidden
  layer, the first conv, ResNet's stem stage, BERT layer 0's FFN."""
  return next(iter(arch.groups()))


def hidden_groups(arch: Arch) -> list[str]:
  """The groups of hidden-layer neurons: every group but BERT's attention
  heads. These are the groups Net2Net widens and the all-layer metric permutes."""
  return [g for g in arch.groups() if not g.startswith("heads_")]


# ------------------------------------------------------------ expansion shapes
# An expansion is a sequence of Net2Net steps, each function-preserving:
#   {"kind": "widen", "layer": i, "width": w | "factor": f}  the i-th hidden group
#   {"kind": "widen_all", "factor": f}                       every hidden group
#   {"kind": "deepen", "after": j, "count": c}               identity layers (mlp, cnn)
# The config's kinds widen_first, widen_all, deepen and widen_ffn are
# shorthands for one or a few steps (`steps`).


def target_width(size: int, width=None, factor=None) -> int:
  """The new width of a group of `size`: `width`, or ceil(size * factor)."""
  if (width is None) == (factor is None):
    raise ValueError("give exactly one of width and factor")
  new = int(width) if width is not None else int(math.ceil(size * factor - 1e-9))
  if new < size:
    raise ValueError(f"width {new} is smaller than the current {size}: Net2Net only grows")
  return new


def steps(spec: dict, arch: Arch) -> list[dict]:
  """An expansion's steps: its `steps`, or those of a shorthand kind.

  Args:
    spec: a config expansion entry, {"steps": [...]} or {"kind": shorthand, ...}
      (optionally "split").
    arch: the architecture it expands (widen_ffn widens every layer's FFN).

  Returns:
    The list of step dicts.
  """
  if "steps" in spec:
    return [dict(s) for s in spec["steps"]]
  kind = spec.get("kind")
  size = {k: spec[k] for k in ("width", "factor") if k in spec}
  if kind == "widen_first":
    return [{"kind": "widen", "layer": 0, **size}]
  if kind == "widen_all":
    return [{"kind": "widen_all", **size}]
  if kind == "deepen":
    return [{"kind": "deepen", "after": spec.get("after"), "count": spec.get("count", 1)}]
  if kind == "widen_ffn":
    return [{"kind": "widen", "layer": i, **size} for i in range(len(hidden_groups(arch)))]
  raise ValueError(f"unknown expansion kind {kind!r}; expected steps or one of {SHORTHANDS}")


def kind_of(spec: dict) -> str:
  """An expansion's kind for figures that split a setting by kind: the
  shorthand's, or 'steps'."""
  return spec.get("kind", "steps")


def _resized(arch: Arch, group: str, new: int) -> Arch:
  if isinstance(arch, (MLP, CNN, BERT)):
    field = {"mlp": "hidden", "cnn": "channels", "bert": "ffn"}[arch.kind]
    widths = list(getattr(arch, field))
    widths[int(group.rsplit("_", 1)[1])] = new
    return dataclasses.replace(arch, **{field: tuple(widths)})
  if group.startswith("stage_"):
    stages = list(arch.stages)
    stages[int(group.split("_")[1])] = new
    return dataclasses.replace(arch, stages=tuple(stages))
  b, mids = int(group.split("_")[1]), [list(m) for m in arch.mids]
  for m in mids:  # blocks are numbered across stages
    if b < len(m):
      m[b] = new
      break
    b -= len(m)
  return dataclasses.replace(arch, mids=tuple(map(tuple, mids)))


def widened(arch: Arch, group: str, new: int) -> Arch:
  """`arch` with hidden group `group` at width `new`."""
  if group not in hidden_groups(arch):
    raise ValueError(f"{arch.kind} has no hidden group {group!r}; it has {hidden_groups(arch)}")
  target_width(arch.groups()[group], new)
  return _resized(arch, group, new)


def deepened(arch: Arch, after: int, count: int) -> Arch:
  """`arch` with `count` layers of layer `after`'s width inserted after it."""
  if arch.kind not in ("mlp", "cnn"):
    raise ValueError(f"deepening is defined for mlp and cnn, not {arch.kind}")
  field = "hidden" if arch.kind == "mlp" else "channels"
  widths = list(getattr(arch, field))
  if not isinstance(after, int) or not 0 <= after < len(widths):
    raise ValueError(
        f"deepen after {after} is outside 0..{len(widths) - 1}, the " f"{len(widths)} layers"
    )
  if not isinstance(count, int) or count < 1:
    raise ValueError(f"deepen count must be a positive integer, got {count}")
  widths[after + 1 : after + 1] = [widths[after]] * count
  return dataclasses.replace(arch, **{field: tuple(widths)})


def step_groups(arch: Arch, step: dict) -> list[tuple[str, int]]:
  """The (group, new width) pairs a widening step changes, in order."""
  if step["kind"] == "widen":
    hidden = hidden_groups(arch)
    layer = step.get("layer")
    if not isinstance(layer, int) or not 0 <= layer < len(hidden):
      raise ValueError(
          f"widen layer {layer} is outside 0..{len(hidden) - 1}, the "
          f"{arch.kind}'s hidden groups {hidden}"
      )
    g = hidden[layer]
    return [(g, target_width(arch.groups()[g], step.get("width"), step.get("factor")))]
  if step["kind"] == "widen_all":
    return [
        (g, target_width(w, step.get("width"), step.get("factor")))
        for g, w in arch.groups().items()
        if g in hidden_groups(arch)
    ]
  return []


def apply_step(arch: Arch, step: dict, lineage: dict[str, str]) -> tuple[Arch, dict[str, str]]:
  """One step's shape: the new architecture, and where each of the original
  groups (keys of `lineage`) now lives (deepening renumbers later layers)."""
  kind = step.get("kind")
  if kind in ("widen", "widen_all"):
    for g, new in step_groups(arch, step):
      arch = widened(arch, g, new)
    return arch, lineage
  if kind == "deepen":
    after, count = step.get("after"), step.get("count", 1)
    new = deepened(arch, after, count)
    prefix = "hiddens_" if arch.kind == "mlp" else "convs_"
    shift = lambda g: (
        f"{prefix}{int(g[len(prefix):]) + count}" if int(g[len(prefix) :]) > after else g
    )
    return new, {base: shift(g) for base, g in lineage.items()}
  raise ValueError(f"unknown expansion step kind {kind!r}; expected one of {STEP_KINDS}")


def expanded(arch: Arch, spec: dict) -> tuple[Arch, dict[str, str]]:
  """The shape of an expansion.

  Args:
    arch: the base architecture.
    spec: a config expansion entry (see `steps`).

  Returns:
    (the expanded architecture, lineage): lineage maps every group of the
    base to its name in the expanded model (they differ after a deepening).

  Raises:
    ValueError: naming the step that does not apply (a layer the model lacks,
      a width that does not grow, a deepening of a model that cannot be).
  """
  if spec.get("split", "random") not in SPLITS:
    raise ValueError(f"unknown split {spec['split']!r}; expected one of {SPLITS}")
  lineage = {g: g for g in arch.groups()}
  for i, step in enumerate(steps(spec, arch)):
    try:
      arch, lineage = apply_step(arch, step, lineage)
    except ValueError as e:
      raise ValueError(f"step {i + 1} ({step}): {e}") from None
  return arch, lineage
