"""The paper's figures (matplotlib, headless), each drawn from the workflow's
tables. A figure with nothing to draw is an error that says why, never an
empty image. Error bars are 95% t-intervals over seeds of the mean
(`correlation.summarize`) for correlations, and the standard deviation over
seeds for G_t and M_t.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from manifold_metric import correlation, gain  # noqa: E402

# The scores of Figures 2 and 7, in their order, and their labels.
BAR_SCORES = {
    "manifold": "Manifold $M_0$",
    "manifold_all": "$M_0$, every layer",
    "size": "Size (parameters)",
    "width": "Width (permuted layer)",
    "gradnorm": "GradNorm",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
    "jacov": "Jacov",
}
SOTL_LABEL = r"$-$SoTL-E"


class NothingToDraw(ValueError):
  """A figure's tables hold nothing it could draw."""


def _require(table: pd.DataFrame, what: str) -> pd.DataFrame:
  if table is None or table.empty:
    raise NothingToDraw(f"nothing to draw: {what}")
  return table


def save(fig, png, pdf) -> None:
  """Writes the figure as png and pdf (the rule's two outputs)."""
  fig.savefig(png, dpi=150, bbox_inches="tight")
  fig.savefig(pdf, bbox_inches="tight")
  plt.close(fig)


def _gain_label(metrics: pd.DataFrame) -> str:
  """'best - worst G_T*' of a setting, paired over seeds, for labels."""
  d = gain.paired_difference(metrics)
  return f"$\\Delta G^*$ {100 * d['diff']:.2f}$\\pm${100 * d['se']:.2f} pts"


def figure1(curves: pd.DataFrame):
  """Loss along linear paths between consecutive permuted minima, one panel
  per model (phi* and the widened, trained candidates): mean and range over
  pairs and seeds."""
  _require(curves, "no loss curves")
  names = list(dict.fromkeys(curves.model))
  fig, axes = plt.subplots(
      1, len(names), figsize=(3.2 * len(names), 2.8), sharey=True, squeeze=False
  )
  for ax, name in zip(axes[0], names):
    c = curves[curves.model == name]
    stats = c.groupby("alpha").loss.agg(["mean", "min", "max"])
    ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2, label="range")
    ax.plot(stats.index, stats["mean"], label="mean")
    ax.set_title(f"{name} (width {c.width.iloc[0]})")
    ax.set_xlabel(r"$\alpha$")
  axes[0, 0].set_ylabel("training loss on the metric batch")
  axes[0, 0].legend()
  fig.tight_layout()
  return fig


def bars(corr: pd.DataFrame, metrics: dict[str, pd.DataFrame], methods):
  """Figures 2 and 7: each score's correlation at t = 0 with G_T* per
  setting, the mean over seeds with its 95% interval; a score whose
  correlation is undefined on every seed (constant across candidates) is
  marked so in words, and on some seeds with the count of defined ones.

  Args:
    corr: correlation tables of the settings (`correlation.setting_correlations`).
    metrics: per setting its metric table (for G_T* in the setting's label).
    methods: one row of panels per correlation method.
  """
  corr = _require(
      corr[(corr.epoch == 0) & corr.metric.isin(list(BAR_SCORES))],
      "no correlation at t = 0 of the manifold metric, size or a proxy",
  )
  summary = correlation.summarize(corr, baselines=())
  settings = list(dict.fromkeys(corr.setting))
  scores = [m for m in BAR_SCORES if m in set(corr.metric)]
  labels = [f"{s}\n{_gain_label(metrics[s])}" for s in settings]
  fig, axes = plt.subplots(
      len(methods), 1, figsize=(2.2 * len(settings) + 3, 3.4 * len(methods)), squeeze=False
  )
  width = 0.8 / len(scores)
  for ax, method in zip(axes[:, 0], methods):
    s = _require(summary[summary.method == method], f"no {method} correlation")
    s = s.set_index(["setting", "metric"])
    for i, m in enumerate(scores):
      x = np.arange(len(settings)) + (i - len(scores) / 2 + 0.5) * width
      rows = [s.loc[(st, m)] if (st, m) in s.index else None for st in settings]
      mean = np.array([np.nan if r is None else r["mean"] for r in rows])
      bar = ax.bar(
          x,
          np.nan_to_num(mean),
          width,
          yerr=_interval(rows),
          capsize=1.5,
          label=BAR_SCORES[m],
          error_kw={"lw": 0.6},
      )
      ax.plot(x, mean, "_", color="black", ms=4)  # the mean, visible also at 0
      for xi, r in zip(x, rows):
        if r is None:
          continue
        if r["count"] == 0:
          ax.text(
              xi,
              0.02,
              "undefined",
              rotation=90,
              ha="center",
              va="bottom",
              fontsize=6,
              color=bar.patches[0].get_facecolor(),
          )
        elif r["count"] < r["seeds"]:
          ax.text(xi, 1.02, f"{int(r['count'])}/{int(r['seeds'])}", ha="center", fontsize=5)
    ax.set_xticks(np.arange(len(settings)), labels, fontsize=7)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set(ylabel=f"{method.capitalize()} with $G_T^*$", ylim=(-1.1, 1.15))
  axes[0, 0].legend(ncol=len(scores), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0))
  fig.text(
      0.01,
      -0.01,
      "bars: mean over seeds, 95% interval; 'undefined': the score is "
      "constant across candidates on every seed; k/n: defined on k of n seeds",
      fontsize=6,
  )
  fig.tight_layout()
  return fig


def main_rows(metrics: pd.DataFrame, q: float, n: int, group: str | None = None):
  """The metric rows of M_t as the paper draws it: the first group (or
  `group`), the paper's walk, at (q, n)."""
  pick = metrics["first"] if group is None else metrics.group == group
  return metrics[pick & (metrics.walk == "paper") & (metrics.q == q) & (metrics.n == n)]


def gain_and_metric(ax_gain, ax_metric, metrics: pd.DataFrame, q: float, n: int, title: str):
  """G_t (percent points; a star at its best) and M_t, mean and std over
  seeds per expansion over epochs, at one (q, n)."""
  main = _require(main_rows(metrics, q, n), f"{title}: no metric rows at q={q:g}, n={n}")
  for expansion, t in main.groupby("expansion", sort=False):
    stats = t.groupby("epoch")[["gain", "M"]].agg(["mean", "std"])
    g = 100 * stats["gain"]["mean"]
    (line,) = ax_gain.plot(stats.index, g, label=expansion)
    ax_gain.plot(g.idxmax(), g.max(), "*", color=line.get_color(), ms=10)
    ax_metric.errorbar(
        stats.index,
        stats["M"]["mean"],
        stats["M"]["std"],
        capsize=2,
        color=line.get_color(),
        label=expansion,
    )
  ax_gain.set(title=f"{title}: gain $G_t$ (% points)", xlabel="epoch t")
  ax_metric.set(title=f"$M_t$ (q={q:g}, n={n}), mean $\\pm$ sd", xlabel="epoch t")
  ax_gain.legend(fontsize=7)


def _interval(rows):
  """Error bars (below, above) of summary rows: the 95% bootstrap interval
  (which the mean of a few skewed values can lie just outside of: a bar of 0
  then), none where it is undefined."""
  err = [
      [0.0, 0.0]
      if r is None or not np.isfinite(r["ci_low"])
      else [r["mean"] - r["ci_low"], r["ci_high"] - r["mean"]]
      for r in rows
  ]
  return np.maximum(np.array(err).T, 0.0)


def _lambda_zero(metrics: pd.DataFrame, n: int) -> dict[float, str]:
  """Per q, how many seeds have lambda = 0 at (q, n), first group, paper
  walk ("k/S"), where any do: there M_t counts exact zeros (identity steps,
  Net2Net replicas, dead neurons), not connectivity."""
  t = metrics[
      metrics["first"] & (metrics.walk == "paper") & (metrics.n == n) & (metrics.epoch == 0)
  ]
  per_seed = t.groupby(["q", "seed"]).lambda_zero.any().groupby("q")
  return {
      q: f"{int(k)}/{int(s)}"
      for q, k, s in zip(per_seed.sum().index, per_seed.sum(), per_seed.size())
      if k
  }


def _tau_over_epochs(ax, corr: pd.DataFrame, zero: dict[float, str]):
  summary = correlation.summarize(corr[corr.method == "kendall"], baselines=())
  drawn = 0
  for name, s in summary.groupby("metric"):
    if name == "sotl_e":
      label = SOTL_LABEL
    elif name.startswith("manifold_q"):
      q = float(name[len("manifold_q") :])
      label = f"$M_t$, q={q:g}" + (f" ($\\lambda$=0 on {zero[q]} seeds)" if q in zero else "")
    else:  # the main q again, or a score at t = 0 only
      continue
    s = s.sort_values("epoch")
    ax.errorbar(
        s.epoch,
        s["mean"],
        _interval([r for _, r in s.iterrows()]),
        capsize=2,
        label=label,
        lw=1,
        elinewidth=0.6,
    )
    undefined = s[s["count"] == 0]
    for t in undefined.epoch:
      ax.text(t, 0.0, "undef.", fontsize=6, ha="center", rotation=90)
    drawn += 1
  if not drawn:
    raise NothingToDraw("no Kendall tau of M_t or SoTL-E over epochs")
  ax.set(title=r"Kendall $\tau$ with $G_T^*$ (95% interval)", xlabel="epoch t", ylim=(-1.1, 1.1))
  ax.axhline(0, color="gray", lw=0.5)
  ax.legend(fontsize=7)


def over_epochs(rows, q: float, n: int):
  """Figures 3, 5 and 9: per setting, G_t, M_t, and the Kendall tau of M_t
  (per q) and of -SoTL-E with G_T* over epochs.

  Args:
    rows: (setting, metric table, correlation table) per row of panels.
    q, n: the main (q, n) of the G_t and M_t panels.
  """
  rows = list(rows)
  if not rows:
    raise NothingToDraw("no setting")
  fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.2 * len(rows)), squeeze=False)
  for (setting, metrics, corr), (ax_g, ax_m, ax_c) in zip(rows, axes):
    gain_and_metric(ax_g, ax_m, metrics, q, n, f"{setting} ({_gain_label(metrics)})")
    _tau_over_epochs(ax_c, corr, _lambda_zero(metrics, n))
  fig.tight_layout()
  return fig


def columns(panels, q: float, n: int):
  """Figures 4 and 10: G_t (top) and M_t (bottom), one column per panel.

  Args:
    panels: (title, metric table) per column, e.g. per setting, or per
      expansion kind of one setting.
  """
  panels = list(panels)
  if not panels:
    raise NothingToDraw("no panel")
  fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.2), squeeze=False)
  for (ax_g, ax_m), (title, metrics) in zip(axes.T, panels):
    gain_and_metric(ax_g, ax_m, metrics, q, n, title)
  fig.tight_layout()
  return fig


def sensitivity(tables):
  """Figures 6 and 8: Kendall tau of M_0 with G_T* over the (q, n) grid,
  the mean over seeds (and how many seeds define it), one heatmap per
  setting and walk: the paper's (top) and the one whose steps never undo
  themselves (bottom). A cell where lambda = 0 on some seeds is hatched and
  says on how many: there M_0 counts exact zeros, not connectivity."""
  tables = [_require(t, "an empty sensitivity table") for t in tables]
  if not tables:
    raise NothingToDraw("no setting")
  walks = sorted({w for t in tables for w in t.walk}, key=lambda w: w != "paper")
  fig, axes = plt.subplots(
      len(walks),
      len(tables),
      figsize=(4.4 * len(tables) + 1, 3.4 * len(walks)),
      squeeze=False,
      layout="constrained",
  )
  for j, t in enumerate(tables):
    for i, walk in enumerate(walks):
      ax, tw = axes[i, j], t[t.walk == walk]
      grid = tw.pivot_table(index="q", columns="n", values="value", aggfunc="mean", dropna=False)
      count = tw.pivot_table(index="q", columns="n", values="value", aggfunc="count")
      zero = tw.pivot_table(index="q", columns="n", values="lambda_zero", aggfunc="sum")
      im = ax.imshow(grid.to_numpy(), cmap="RdBu", vmin=-1, vmax=1, origin="lower", aspect="auto")
      seeds = tw.seed.nunique()
      for (r, c), v in np.ndenumerate(grid.to_numpy()):
        k, z = int(count.to_numpy()[r, c]), int(zero.to_numpy()[r, c])
        text = "undef." if k == 0 else f"{v:.2f}" + ("" if k == seeds else f"\n{k}/{seeds}")
        if z:
          text += f"\n$\\lambda$=0: {z}/{seeds}"
          ax.add_patch(
              plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="///", lw=0, color="gray")
          )
        ax.text(
            c,
            r,
            text,
            ha="center",
            va="center",
            fontsize=6,
            color="white" if k and abs(v) > 0.6 else "black",
        )
      ax.set_xticks(range(grid.shape[1]), grid.columns)
      ax.set_yticks(range(grid.shape[0]), [f"{q:g}" for q in grid.index])
      ax.set(xlabel="n", ylabel="q", title=f"{t.setting.iloc[0]}, {walk} walk")
  fig.colorbar(
      im, ax=axes.ravel().tolist(), label=r"Kendall $\tau$($M_0$, $G_T^*$), mean over seeds"
  )
  return fig


def figure11(rows, q: float, n: int):
  """Figure 11: (i) M_t of a BERT trained from random initialisation,
  relative to its epoch 1, per q; (ii) M_t of the expanded BERTs with
  attention heads permuted instead of FFN neurons.

  Args:
    rows: (setting, scratch table, heads metric table) per row.
  """
  rows = list(rows)
  if not rows:
    raise NothingToDraw("no setting")
  fig, axes = plt.subplots(len(rows), 2, figsize=(9, 3.2 * len(rows)), squeeze=False)
  for (setting, scratch, heads), (ax_s, ax_h) in zip(rows, axes):
    _require(scratch, f"{setting}: no barrier sets of the run from random initialisation")
    for qq, t in scratch[scratch.walk == "paper"].groupby("q"):
      s = t.groupby("epoch").M.agg(["mean", "std"])
      ax_s.errorbar(s.index, s["mean"], s["std"], capsize=2, label=f"q={qq:g}")
    ax_s.set(title=f"{setting}: from random init, $M_t$ vs epoch 1", xlabel="epoch t")
    ax_s.legend(fontsize=7)
    main = _require(main_rows(heads, q, n, group="heads_0"), f"{setting}: no heads metric rows")
    for expansion, t in main.groupby("expansion", sort=False):
      s = t.groupby("epoch").M.agg(["mean", "std"])
      ax_h.errorbar(s.index, s["mean"], s["std"], capsize=2, label=expansion)
    ax_h.set(title=f"{setting}: heads permuted, $M_t$ (q={q:g})", xlabel="epoch t")
    ax_h.legend(fontsize=7)
  fig.tight_layout()
  return fig
