"""Figures refuse to draw nothing, say "undefined" where a score is constant
across the candidates instead of leaving a blank, draw M_t from the rows the
paper means (first group, paper's walk), and mark where lambda = 0."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from manifold_metric import plots


def _metrics(setting="s"):
  """Rows of a metric table: two groups and two walks, the first group on
  the paper's walk with M = t, every other row with M = 100 + t."""
  rows = [
      {
          "setting": setting,
          "expansion": e,
          "seed": seed,
          "epoch": t,
          "q": 0.4,
          "n": 10,
          "group": g,
          "walk": w,
          "first": g == "convs_0",
          "hidden": True,
          "lambda_zero": False,
          "M": 1.0 * t if (g, w) == ("convs_0", "paper") else 100.0 + t,
          "gain": 0.01 * t * (i + 1),
          "gain_best": 0.01 * 2 * (i + 1),
      }
      for i, e in enumerate(["a", "b", "c"])
      for seed in (0, 1)
      for t in (0, 1, 2)
      for g in ("convs_0", "convs_1")
      for w in ("paper", "nonidentity")
  ]
  return pd.DataFrame(rows)


def _corr(setting="s"):
  rows = []
  for seed in (0, 1):
    for metric, value in (
        ("manifold", 0.5 + 0.1 * seed),
        ("manifold_all", 0.2),
        ("width", 0.3 * seed),
        ("jacov", np.nan),
    ):  # jacov: constant
      rows.append(
          {
              "setting": setting,
              "seed": seed,
              "epoch": 0,
              "metric": metric,
              "method": "kendall",
              "value": value,
          }
      )
  return pd.DataFrame(rows)


def _texts(fig):
  return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def test_bars_say_undefined_in_words_and_draw_the_new_scores():
  assert list(plots.BAR_SCORES)[:4] == ["manifold", "manifold_all", "size", "width"]
  fig = plots.bars(_corr(), {"s": _metrics()}, ["kendall"])
  assert "undefined" in _texts(fig)
  legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert legend == [plots.BAR_SCORES[m] for m in ("manifold", "manifold_all", "width", "jacov")]
  heights = [p.get_height() for p in fig.axes[0].patches]
  assert heights == pytest.approx([0.55, 0.2, 0.15, 0.0])  # means over seeds; undefined at 0


def test_main_rows_are_the_first_group_on_the_papers_walk():
  m = _metrics()
  rows = plots.main_rows(m, 0.4, 10)
  assert len(rows) == 3 * 2 * 3 and (rows.M < 100).all()
  assert set(rows.group) == {"convs_0"} and set(rows.walk) == {"paper"}
  other = plots.main_rows(m, 0.4, 10, group="convs_1")
  assert len(other) == 18 and set(other.group) == {"convs_1"} and (other.M >= 100).all()
  assert plots.main_rows(m, 0.2, 10).empty and plots.main_rows(m, 0.4, 20).empty


def test_over_epochs_draws_m_t_of_the_main_rows():
  corr = pd.DataFrame(
      [
          {"setting": "s", "seed": s, "epoch": t, "metric": m, "method": "kendall", "value": 0.5}
          for s in (0, 1)
          for t in (0, 1, 2)
          for m in ("manifold_q0.4", "sotl_e")
      ]
  )
  fig = plots.over_epochs([("s", _metrics(), corr)], 0.4, 10)
  bars = fig.axes[1].containers  # one error bar per expansion: M_t's mean over epochs
  assert len(bars) == 3
  for bar in bars:
    np.testing.assert_allclose(np.asarray(bar.lines[0].get_ydata(), float), [0.0, 1.0, 2.0])


def _sensitivity(walk, zero_seeds):
  """Kendall tau over a 2 x 2 (q, n) grid for two seeds; lambda = 0 at
  (q, n) = (0.05, 50) on `zero_seeds` seeds."""
  return pd.DataFrame(
      [
          {
              "setting": "s",
              "seed": seed,
              "epoch": 0,
              "walk": walk,
              "method": "kendall",
              "value": 0.1 * seed + q,
              "q": q,
              "n": n,
              "lambda_zero": (q, n) == (0.05, 50) and seed < zero_seeds,
          }
          for seed in (0, 1)
          for q in (0.05, 0.4)
          for n in (50, 100)
      ]
  )


def test_sensitivity_draws_both_walks_and_hatches_lambda_zero():
  table = pd.concat([_sensitivity("paper", 2), _sensitivity("nonidentity", 1)], ignore_index=True)
  fig = plots.sensitivity([table])
  heatmaps = [ax for ax in fig.axes if ax.get_title()]
  assert [ax.get_title() for ax in heatmaps] == ["s, paper walk", "s, nonidentity walk"]
  for ax, zero in zip(heatmaps, ("2/2", "1/2")):
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert len(hatched) == 1  # the one (q, n) cell with lambda = 0
    assert hatched[0].get_xy() == (-0.5, -0.5)  # n = 50 (column 0), q = 0.05 (row 0)
    texts = [t.get_text() for t in ax.texts]
    assert sum("$\\lambda$=0" in t for t in texts) == 1
    assert any(t.endswith(f"$\\lambda$=0: {zero}") for t in texts)
    assert sum(t.startswith("0.45") for t in texts) == 2  # q = 0.4: the mean of 0.4 and 0.5
  grid = heatmaps[0].images[0].get_array()
  np.testing.assert_allclose(grid, [[0.1, 0.1], [0.45, 0.45]])


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plots.figure1(pd.DataFrame(columns=["model", "alpha", "loss", "width"])),
        lambda: plots.bars(_corr().assign(epoch=1), {"s": _metrics()}, ["kendall"]),
        lambda: plots.over_epochs([], 0.4, 10),
        lambda: plots.columns([], 0.4, 10),
        lambda: plots.columns([("s", _metrics().assign(q=0.2))], 0.4, 10),
        lambda: plots.columns([("s", _metrics().assign(walk="nonidentity"))], 0.4, 10),
        lambda: plots.sensitivity([]),
        lambda: plots.sensitivity(
            [pd.DataFrame(columns=["setting", "seed", "q", "n", "value", "walk", "lambda_zero"])]
        ),
        lambda: plots.figure11([], 0.4, 10),
    ],
    ids=[
        "figure1",
        "bars-no-t0",
        "over-epochs",
        "columns",
        "columns-no-q",
        "columns-no-paper-walk",
        "sensitivity",
        "sensitivity-empty",
        "figure11",
    ],
)
def test_nothing_to_draw_is_an_error_that_says_why(draw):
  with pytest.raises(plots.NothingToDraw, match="^nothing to draw|^no |no metric rows"):
    draw()
