"""Architectures as frozen values: the paper's sizes, validation, hashing
(jit static arguments), plain-data round trips, neuron groups, and the
shapes and lineage of Net2Net expansions."""

import functools
import json

import jax
import jax.numpy as jnp
import pytest

from manifold_metric import archs
from manifold_metric.archs import BERT, CNN, MLP, ResNet18


def test_image_defaults_are_the_papers():
  assert archs.make({"kind": "mlp"}) == MLP((20,))  # Figure 1: one hidden layer of 20
  assert archs.make({"kind": "cnn"}) == CNN((8, 32), 256)  # Table 2, CIFAR10
  assert archs.make({"kind": "cnn", "channels": [16, 64, 64, 64]}) == CNN((16, 64, 64, 64), 256)
  r = archs.make({"kind": "resnet18"})
  assert r.stages == (64, 128, 256, 512)
  assert r.mids == ((64, 64), (128, 128), (256, 256), (512, 512))  # two blocks per stage
  assert r.num_classes is None


def test_bert_presets_are_table_3():
  assert archs.make({"kind": "bert"}) == BERT(2, 128, 2, (512, 512))  # tinybert by default
  assert archs.make({"kind": "bert", "preset": "minibert"}) == BERT(4, 256, 4, (1024,) * 4)
  assert archs.make({"kind": "bert", "ffn": 64}).ffn == (64, 64)  # one width for every layer
  assert archs.make({"kind": "bert", "ffn": [8, 16]}).ffn == (8, 16)
  assert archs.make({"kind": "bert", "preset": "minibert", "layers": 1, "ffn": 32}) == BERT(
      1, 256, 4, (32,)
  )


@pytest.mark.parametrize(
    "model,match",
    [
        ({"kind": "vit"}, r"unknown model kind 'vit'"),
        ({}, r"unknown model kind None"),
        ({"kind": "cnn", "hidden": [4]}, r"a cnn model takes channels, dense, not hidden"),
        ({"kind": "mlp", "channels": [4], "dense": 8}, r"takes hidden, not channels, dense"),
        (
            {"kind": "mlp", "hidden": [4, 0]},
            r"mlp hidden widths must be positive integers, got \[4, 0\]",
        ),
        ({"kind": "mlp", "hidden": []}, r"mlp hidden widths"),
        ({"kind": "cnn", "channels": [4], "dense": -1}, r"cnn dense width"),
        ({"kind": "cnn", "channels": [4.5]}, r"cnn channels"),
        ({"kind": "resnet18", "stages": [4, 4, 4]}, r"resnet18 has 4 stages"),
        ({"kind": "resnet18", "mids": [[4], [4], [0], [4]]}, r"resnet18 block widths"),
        ({"kind": "bert", "preset": "bert-large"}, r"unknown BERT preset 'bert-large'"),
        ({"kind": "bert", "heads": 3}, r"hidden 128 is not a multiple of heads 3"),
        ({"kind": "bert", "layers": 3, "ffn": [8, 8]}, r"ffn lists 2 widths for 3 layers"),
        (
            {"kind": "bert", "hidden": [8]},
            r"a bert model takes preset, layers, heads, ffn, not hidden",
        ),
    ],
)
def test_invalid_models_are_named(model, match):
  with pytest.raises(ValueError, match=match):
    archs.make(model)


def test_with_data_fills_in_the_datas_sizes():
  assert archs.with_data(MLP((4,)), num_classes=10) == MLP((4,), 10)
  b = archs.with_data(archs.make({"kind": "bert"}), vocab_size=300, max_len=32)
  assert (b.vocab_size, b.max_len) == (300, 32) and b.ffn == (512, 512)
  assert archs.is_lm(b) and not archs.is_lm(MLP((4,)))


ARCHS = [
    MLP((4, 6), 10),
    CNN((8,), 16, 3),
    ResNet18((4, 8, 8, 8), ((3, 5), (3,), (4, 4, 4), (2,)), 10),
    BERT(2, 16, 2, (32, 24), 50, 16),
    MLP((4,)),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.kind)
def test_to_dict_round_trips_also_through_json(arch):
  d = archs.to_dict(arch)
  assert d["kind"] == arch.kind
  assert archs.from_dict(d) == arch
  again = archs.from_dict(json.loads(json.dumps(d)))  # as checkpoints store it: lists
  assert again == arch and hash(again) == hash(arch)
  with pytest.raises(ValueError, match="unknown model kind 'lstm'"):
    archs.from_dict({**d, "kind": "lstm"})


def test_archs_are_frozen_hashable_and_jit_static_arguments():
  a = MLP((4, 6), 10)
  with pytest.raises(AttributeError):
    a.hidden = (5,)
  assert len({a, MLP((4, 6), 10), MLP((4, 7), 10)}) == 2
  traces = []

  @functools.partial(jax.jit, static_argnums=1)
  def width(x, arch):
    traces.append(arch)
    return x * arch.groups()[archs.first_group(arch)]

  assert float(width(jnp.float32(2), a)) == 8.0
  # An equal value (here from its plain data) is the same static argument: no retrace.
  assert float(width(jnp.float32(3), archs.from_dict(archs.to_dict(a)))) == 12.0
  assert len(traces) == 1
  assert float(width(jnp.float32(1), MLP((5, 6), 10))) == 5.0
  assert len(traces) == 2


def test_groups_first_and_hidden_groups():
  mlp, cnn, resnet, bert = ARCHS[:4]
  assert mlp.groups() == {"hiddens_0": 4, "hiddens_1": 6}
  assert cnn.groups() == {"convs_0": 8}
  # The stem's stream first, then each stage's blocks (numbered across stages) and stream.
  assert list(resnet.groups().items()) == [
      ("stage_0", 4),
      ("blocks_0_mid", 3),
      ("blocks_1_mid", 5),
      ("blocks_2_mid", 3),
      ("stage_1", 8),
      ("blocks_3_mid", 4),
      ("blocks_4_mid", 4),
      ("blocks_5_mid", 4),
      ("stage_2", 8),
      ("blocks_6_mid", 2),
      ("stage_3", 8),
  ]
  assert bert.groups() == {"ffn_0": 32, "ffn_1": 24, "heads_0": 2}
  assert [archs.first_group(a) for a in ARCHS[:4]] == ["hiddens_0", "convs_0", "stage_0", "ffn_0"]
  assert archs.hidden_groups(bert) == ["ffn_0", "ffn_1"]  # the heads are never widened
  assert archs.hidden_groups(resnet) == list(resnet.groups())


def test_steps_of_the_shorthands():
  mlp, bert = MLP((4, 6)), BERT(2, 16, 2, (32, 24))
  assert archs.steps({"kind": "widen_first", "width": 8}, mlp) == [
      {"kind": "widen", "layer": 0, "width": 8}
  ]
  assert archs.steps({"kind": "widen_all", "factor": 1.5}, mlp) == [
      {"kind": "widen_all", "factor": 1.5}
  ]
  assert archs.steps({"kind": "deepen", "after": 1}, mlp) == [
      {"kind": "deepen", "after": 1, "count": 1}
  ]
  assert archs.steps({"kind": "widen_ffn", "width": 64}, bert) == [
      {"kind": "widen", "layer": 0, "width": 64},
      {"kind": "widen", "layer": 1, "width": 64},
  ]
  seq = {"steps": [{"kind": "deepen", "after": 0, "count": 2}]}
  assert archs.steps(seq, mlp) == seq["steps"] and archs.steps(seq, mlp)[0] is not seq["steps"][0]
  assert [archs.kind_of(s) for s in ({"kind": "widen_first"}, seq)] == ["widen_first", "steps"]


@pytest.mark.parametrize(
    "base,spec,want,lineage",
    [
        (MLP((4, 6), 10), {"kind": "widen_first", "width": 9}, MLP((9, 6), 10), {}),
        (MLP((4, 6), 10), {"kind": "widen_first", "factor": 1.3}, MLP((6, 6), 10), {}),  # ceil 5.2
        (
            MLP((20,), 10),
            {"kind": "widen_first", "factor": 1.25},
            MLP((25,), 10),
            {},
        ),  # exact, not 26
        (MLP((4, 6), 10), {"kind": "widen_all", "factor": 1.5}, MLP((6, 9), 10), {}),
        (CNN((8, 32), 256), {"kind": "widen_all", "factor": 2}, CNN((16, 64), 256), {}),  # not fc
        (
            CNN((16, 64, 64, 64), 256),
            {"kind": "deepen", "after": 2, "count": 2},
            CNN((16, 64, 64, 64, 64, 64), 256),
            {"convs_3": "convs_5"},
        ),
        (
            MLP((4, 6, 5)),
            {"kind": "deepen", "after": 0, "count": 2},
            MLP((4, 4, 4, 6, 5)),
            {"hiddens_1": "hiddens_3", "hiddens_2": "hiddens_4"},
        ),
        (MLP((4, 6)), {"kind": "deepen", "after": 1}, MLP((4, 6, 6)), {}),  # after the last
        (
            ResNet18((4, 8, 8, 8), ((3,), (3,), (4,), (2,))),
            {"kind": "widen_all", "factor": 1.5},
            ResNet18((6, 12, 12, 12), ((5,), (5,), (6,), (3,))),
            {},
        ),
        (
            ResNet18((4, 8, 8, 8), ((3, 5), (3,), (4,), (2,))),
            {"steps": [{"kind": "widen", "layer": 2, "width": 7}]},  # the third group: blocks_1_mid
            ResNet18((4, 8, 8, 8), ((3, 7), (3,), (4,), (2,))),
            {},
        ),
        (
            BERT(2, 16, 2, (32, 24)),
            {"kind": "widen_ffn", "width": 40},
            BERT(2, 16, 2, (40, 40)),
            {},
        ),
        (
            BERT(2, 16, 2, (32, 24)),
            {"kind": "widen_ffn", "factor": 2},
            BERT(2, 16, 2, (64, 48)),
            {},
        ),
        (
            BERT(2, 16, 2, (32, 24)),
            {"steps": [{"kind": "widen", "layer": 1, "width": 30}]},
            BERT(2, 16, 2, (32, 30)),
            {},
        ),
        (
            BERT(2, 16, 2, (32, 24)),
            {"kind": "widen_all", "factor": 1.5},
            BERT(2, 16, 2, (48, 36)),
            {},
        ),  # the heads stay
        # A sequence: widen layer 0 to 8, insert an identity layer after layer 1 (a copy of its
        # width), then widen layer 1 of the model as it is by then.
        (
            MLP((4, 6, 5), 10),
            {
                "steps": [
                    {"kind": "widen", "layer": 0, "width": 8},
                    {"kind": "deepen", "after": 1, "count": 1},
                    {"kind": "widen", "layer": 1, "factor": 2},
                ]
            },
            MLP((8, 12, 6, 5), 10),
            {"hiddens_2": "hiddens_3"},
        ),
        # Deepening after a widening copies the widened width; the second deepening
        # renumbers what the first already moved.
        (
            CNN((4, 6), 16),
            {
                "steps": [
                    {"kind": "widen", "layer": 0, "width": 5},
                    {"kind": "deepen", "after": 0, "count": 1},
                    {"kind": "deepen", "after": 0, "count": 2},
                    {"kind": "widen_all", "factor": 2},
                ]
            },
            CNN((10, 10, 10, 10, 12), 16),
            {"convs_1": "convs_4"},
        ),
    ],
)
def test_expanded_shapes_and_lineage(base, spec, want, lineage):
  got, lin = archs.expanded(base, spec)
  assert got == want
  assert lin == {**{g: g for g in base.groups()}, **lineage}
  assert set(lin.values()) <= set(got.groups())
  if all(s["kind"] == "deepen" for s in archs.steps(spec, base)):
    for b, g in lin.items():  # deepening moves groups, never resizes them
      assert got.groups()[g] == base.groups()[b]


def test_step_groups_lists_the_groups_a_step_widens():
  r = ResNet18((4, 8, 8, 8), ((3,), (3,), (4,), (2,)))
  pairs = archs.step_groups(r, {"kind": "widen_all", "factor": 2})
  assert pairs == [(g, 2 * w) for g, w in r.groups().items()]
  assert archs.step_groups(r, {"kind": "widen", "layer": 0, "width": 5}) == [("stage_0", 5)]
  assert archs.step_groups(r, {"kind": "deepen", "after": 0}) == []
  assert archs.target_width(8, factor=1.5) == 12 and archs.target_width(8, width=8) == 8


@pytest.mark.parametrize(
    "base,spec,match",
    [
        (
            MLP((4, 6)),
            {"kind": "widen_first", "width": 3},
            r"step 1 .*width 3 is smaller than the " r"current 4: Net2Net only grows",
        ),
        (MLP((4, 6)), {"kind": "widen_first"}, r"give exactly one of width and factor"),
        (MLP((4, 6)), {"kind": "widen_first", "width": 8, "factor": 2}, r"exactly one"),
        (
            MLP((4, 6)),
            {"steps": [{"kind": "widen", "layer": 2, "width": 8}]},
            r"step 1 .*widen layer 2 is outside 0..1, "
            r"the mlp's hidden groups \['hiddens_0', 'hiddens_1'\]",
        ),
        (
            BERT(2, 16, 2, (32, 24)),
            {"steps": [{"kind": "widen", "layer": 2, "width": 64}]},
            r"widen layer 2 is outside 0..1",
        ),  # heads_0 is a group, but not a hidden one
        (
            MLP((4, 6)),
            {"steps": [{"kind": "widen", "layer": 0, "width": 8}, {"kind": "deepen", "after": 2}]},
            r"step 2 \(.*\): deepen after 2 is outside 0..1, the 2 layers",
        ),
        (MLP((4, 6)), {"kind": "deepen"}, r"deepen after None is outside"),
        (
            MLP((4, 6)),
            {"kind": "deepen", "after": 0, "count": 0},
            r"count must be a positive integer",
        ),
        (
            ResNet18((4, 8, 8, 8), ((3,), (3,), (4,), (2,))),
            {"kind": "deepen", "after": 0},
            r"deepening is defined for mlp and cnn, not resnet18",
        ),
        (BERT(2, 16, 2, (32, 24)), {"kind": "deepen", "after": 0}, r"not bert"),
        (
            MLP((4, 6)),
            {"steps": [{"kind": "prune", "layer": 0}]},
            r"unknown expansion step kind 'prune'",
        ),
        (MLP((4, 6)), {"kind": "shrink"}, r"unknown expansion kind 'shrink'"),
        (
            MLP((4, 6)),
            {"kind": "widen_first", "width": 8, "split": "half"},
            r"unknown split 'half'",
        ),
    ],
)
def test_a_step_that_does_not_apply_is_named(base, spec, match):
  with pytest.raises(ValueError, match=match):
    archs.expanded(base, spec)


def test_widened_names_a_group_the_model_lacks():
  with pytest.raises(ValueError, match=r"bert has no hidden group 'heads_0'"):
    archs.widened(BERT(2, 16, 2, (32, 24)), "heads_0", 4)
