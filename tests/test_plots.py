"""Figures refuse to draw nothing, and say "undefined" where a score is
constant across the candidates instead of leaving a blank."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from manifold_metric import plots


def _metrics(setting="s"):
  rows = [{"setting": setting, "expansion": e, "seed": seed, "epoch": t, "q": 0.4, "n": 10,
           "M": 1.0 * t, "gain": 0.01 * t * (i + 1), "gain_best": 0.01 * 2 * (i + 1)}
          for i, e in enumerate(["a", "b", "c"]) for seed in (0, 1) for t in (0, 1, 2)]
  return pd.DataFrame(rows)


def _corr(setting="s"):
  rows = []
  for seed in (0, 1):
    rows.append({"setting": setting, "seed": seed, "epoch": 0, "metric": "manifold",
                 "method": "kendall", "value": 0.5 + 0.1 * seed})
    rows.append({"setting": setting, "seed": seed, "epoch": 0, "metric": "jacov",
                 "method": "kendall", "value": np.nan})  # constant across candidates
  return pd.DataFrame(rows)


def _texts(fig):
  return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def test_bars_say_undefined_in_words():
  fig = plots.bars(_corr(), {"s": _metrics()}, ["kendall"])
  assert "undefined" in _texts(fig)


@pytest.mark.parametrize("draw", [
    lambda: plots.figure1(pd.DataFrame(columns=["model", "alpha", "loss", "width"])),
    lambda: plots.bars(_corr().assign(epoch=1), {"s": _metrics()}, ["kendall"]),
    lambda: plots.over_epochs([], 0.4, 10),
    lambda: plots.columns([], 0.4, 10),
    lambda: plots.columns([("s", _metrics().assign(q=0.2))], 0.4, 10),
    lambda: plots.sensitivity([]),
    lambda: plots.sensitivity([pd.DataFrame(columns=["setting", "seed", "q", "n", "value"])]),
    lambda: plots.figure11([], 0.4, 10),
], ids=["figure1", "bars-no-t0", "over-epochs", "columns", "columns-no-q", "sensitivity",
        "sensitivity-empty", "figure11"])
def test_nothing_to_draw_is_an_error_that_says_why(draw):
  with pytest.raises(plots.NothingToDraw, match="^nothing to draw|^no "):
    draw()
