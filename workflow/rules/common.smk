import os
import re
from types import SimpleNamespace

from snakemake.utils import min_version, validate

from manifold_metric import archs, provenance, study

min_version("9.0")


validate(config, "../../config/schema.yaml")
# What the schema cannot express, before any job; errors name the key.
study.check(config)

# JAX jobs, local or on Slurm (sbatch exports the environment), must not
# preallocate 75% of a GPU that other jobs share; harmless on the CPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Jobs compile the same functions over and over (one arch, many seeds and
# epochs): a persistent compilation cache shared by all jobs saves most of it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# XLA's CPU backend sizes its thread pool to every core it sees, but to
# Snakemake every local job is one thread: `--cores 2` ran two jobs of two
# threads on two cores (10-13% more CPU time per job, 3.7x the involuntary
# context switches of a study; benchmarks/README.md). So a local job gets one
# thread (an exported PJRT_NPROC wins), a Slurm job the CPUs of its
# allocation. On a GPU this sizes the host's CPU backend, which computes
# nothing there.
if slurm_cpus := os.environ.get("SLURM_CPUS_PER_TASK"):
    os.environ.update(PJRT_NPROC=slurm_cpus)
else:
    os.environ.setdefault("PJRT_NPROC", "1")

SETTINGS = config["settings"]
LM = config.get("lm", {})
IMAGE_SETTINGS = [s for s in SETTINGS if not study.is_lm_setting(config, s)]
LM_SETTINGS = [s for s in SETTINGS if study.is_lm_setting(config, s)]
SEEDS = config["seeds"]
LM_SEEDS = LM.get("seeds", SEEDS)
EPOCHS = study.checkpoint_epochs(config["candidate"])
LM_EPOCHS = study.checkpoint_epochs(LM["candidate"]) if LM_SETTINGS else [0]
SCRATCH_EPOCHS = list(range(1, LM["scratch"]["epochs"] + 1)) if LM_SETTINGS else []
# Long jobs, and those that lead to long ones, go first (TinyBERT's base,
# candidates and barrier sets, every setting's proxies): the short image jobs
# then fill both cores at the end, where one long job ran alone before
# (benchmarks/README.md).
FIRST = 1
FIGURES = config["figures"]

# Every result path, in one place. Checkpoint names carry the epoch as 4 digits.
P = SimpleNamespace(
    data="results/data/{dataset}.npz",
    vocab="results/data/{dataset}.vocab.json",
    base="results/base/{setting}/seed{seed}.msgpack",
    base_log="results/base/{setting}/seed{seed}.log.parquet",
    expanded="results/expanded/{setting}/{expansion}/seed{seed}.msgpack",
    trained="results/checkpoints/{setting}/{expansion}/seed{seed}/epoch{epoch}.msgpack",
    run_log="results/checkpoints/{setting}/{expansion}/seed{seed}/log.parquet",
    scratch="results/scratch/{setting}/seed{seed}/epoch{epoch}.msgpack",
    scratch_log="results/scratch/{setting}/seed{seed}/log.parquet",
    # Per seed: epoch 0 (phi* and every theta^(0)), then the candidates' trained
    # epochs; every neuron group of phi*, both walks.
    initial_barriers="results/barriers/{setting}/initial/seed{seed}.parquet",
    barriers="results/barriers/{setting}/trained/seed{seed}.parquet",
    scratch_barriers="results/barriers/{setting}/scratch/seed{seed}.parquet",
    metrics="results/metrics/{setting}.parquet",
    scratch_metrics="results/scratch/{setting}.parquet",
    proxies="results/proxies/{setting}.parquet",
    correlations="results/correlations/{setting}.parquet",
    sensitivity="results/sensitivity/{setting}.parquet",
    ranking="results/rankings/{setting}.parquet",
    ranking_md="results/rankings/{setting}.md",
    outcome_md="results/rankings/{setting}.outcome.md",
    summary="results/tables/correlations_summary.parquet",
    table4="results/tables/table4.parquet",
    table4_md="results/tables/table4.md",
    curves="results/curves/figure1.parquet",
    figure="results/figures/{figure}.png",
    figure_pdf="results/figures/{figure}.pdf",
)


def epoch_name(e):
    return f"{e:04d}"


def alternatives(names):
    """A wildcard regex matching exactly these names (none: nothing)."""
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    setting="[^/.]+",
    expansion="(?!(?:base|initial|scratch)/)[^/]+",
    dataset="[^/.]+",
    seed=r"\d+",


def code(script):
    """The hash of the package code `script` runs (see manifold_metric.provenance):
    in a rule's params, so that editing that code reruns the rule."""
    return provenance.code_hash(os.path.join(workflow.basedir, "workflow", "scripts", script))


def epochs_of(setting):
    return EPOCHS if setting in IMAGE_SETTINGS else LM_EPOCHS


def seeds_of(setting):
    return study.seeds(config, setting)


def seed_outputs(template, lm=False, **fields):
    """An output pattern for every seed of a track's settings ({setting}
    stays a wildcard): one job writes every seed's file."""
    return expand(template, seed=LM_SEEDS if lm else SEEDS, allow_missing=True, **fields)


def per_seed(template, setting, seeds=None, **fields):
    """`template` for every seed of `setting` (or of `seeds`)."""
    return [
        template.format(setting=setting, seed=s, **fields)
        for s in (seeds_of(setting) if seeds is None else seeds)
    ]


def get_dataset_spec(wildcards):
    """A dataset's config entry with its directory resolved (`path`)."""
    spec = config["datasets"][wildcards.dataset]
    return {**spec, "path": study.dataset_path(spec, config.get("data_dir", "data"))}


def get_dataset_npz(wildcards):
    return P.data.format(dataset=SETTINGS[wildcards.setting]["dataset"])


def get_vocab(wildcards):
    text = config["datasets"][wildcards.dataset]["source"] == "wikitext"
    return [P.vocab.format(dataset=wildcards.dataset)] if text else []


def get_model(wildcards):
    return SETTINGS[wildcards.setting]["model"]


def get_expansion(wildcards):
    return SETTINGS[wildcards.setting]["expansions"][wildcards.expansion]


def get_expansions(wildcards):
    return SETTINGS[wildcards.setting]["expansions"]


def get_train_hp(wildcards):
    return study.train_hp(config, wildcards.setting)


def get_base(wildcards):
    return study.track(config, wildcards.setting)["base"]


def get_seeds(wildcards):
    return seeds_of(wildcards.setting)


def get_metric_batch_size(wildcards):
    return study.metric_batch_size(config, wildcards.setting)


def get_base_checkpoints(wildcards):
    """phi* of every seed of the setting."""
    return per_seed(P.base, wildcards.setting)


def run_checkpoints(setting, expansion, seed):
    """The trained checkpoints (epochs >= 1) of one candidate run."""
    return {
        e: P.trained.format(setting=setting, expansion=expansion, seed=seed, epoch=epoch_name(e))
        for e in epochs_of(setting)
        if e > 0
    }


def get_trained_checkpoints(wildcards):
    """Every candidate's trained checkpoints of every seed, by (expansion, seed, epoch)."""
    s = wildcards.setting
    return {
        (e, seed, epoch): path
        for e in SETTINGS[s]["expansions"]
        for seed in seeds_of(s)
        for epoch, path in run_checkpoints(s, e, seed).items()
    }


def get_scratch_checkpoints(wildcards):
    return {
        (seed, e): P.scratch.format(setting=wildcards.setting, seed=seed, epoch=epoch_name(e))
        for seed in seeds_of(wildcards.setting)
        for e in SCRATCH_EPOCHS
    }


def barrier_files(setting):
    """Every barrier set the metric table of a setting reads."""
    return per_seed(P.initial_barriers, setting) + per_seed(P.barriers, setting)


def get_setting_barriers(wildcards):
    return barrier_files(wildcards.setting)


def get_initial_barriers(wildcards):
    return per_seed(P.initial_barriers, wildcards.setting)


def get_scratch_barriers(wildcards):
    return per_seed(P.scratch_barriers, wildcards.setting)


def get_setting_logs(wildcards):
    return [
        P.run_log.format(setting=wildcards.setting, expansion=e, seed=s)
        for e in SETTINGS[wildcards.setting]["expansions"]
        for s in seeds_of(wildcards.setting)
    ]


def largest_expansion(setting):
    """The candidate with the most parameters-to-be, by config order: the last."""
    return list(SETTINGS[setting]["expansions"])[-1]


def get_table4_checkpoints(wildcards):
    """Per setting, phi* of its first seed (Table 4 times its largest expansion)."""
    return {s: P.base.format(setting=s, seed=seeds_of(s)[0]) for s in SETTINGS}


def get_table4_data(wildcards):
    return {f"data_{s}": P.data.format(dataset=SETTINGS[s]["dataset"]) for s in SETTINGS}


def get_figure1_checkpoints(wildcards):
    f1 = FIGURES["figure1"]
    s, T = f1["setting"], config["candidate"]["epochs"]
    ckpts = {"base": per_seed(P.base, s)}
    for e in f1["expansions"]:
        ckpts[e] = per_seed(P.trained, s, expansion=e, epoch=epoch_name(T))
    return ckpts


def figure_settings(figure):
    return FIGURES.get(figure, {}).get("settings", [])


def figure_tables(template, figure):
    """One table per setting drawn in a figure."""
    return lambda wildcards: [template.format(setting=s) for s in figure_settings(figure)]


def expansion_kinds(figure):
    """Per setting of a figure, its expansions' kinds (Figures 4 and 10 split
    a setting into one column per kind with `by_kind`)."""
    return {
        s: {e: archs.kind_of(spec) for e, spec in SETTINGS[s]["expansions"].items()}
        for s in figure_settings(figure)
    }


def get_intermediates():
    """Every cached intermediate. `all` asks for them too, so that a deleted
    one is rebuilt, and with it exactly what depends on it (Snakemake alone
    ignores a missing input of an up-to-date output)."""
    files = []
    for s in SETTINGS:
        files += barrier_files(s) + [P.proxies.format(setting=s)]
        files += per_seed(P.base, s) + per_seed(P.base_log, s)
        for e in SETTINGS[s]["expansions"]:
            for seed in seeds_of(s):
                files.append(P.expanded.format(setting=s, expansion=e, seed=seed))
                files.append(P.run_log.format(setting=s, expansion=e, seed=seed))
                files += run_checkpoints(s, e, seed).values()
        if s in LM_SETTINGS:
            files += get_scratch_barriers(SimpleNamespace(setting=s))
    return sorted(set(files))


def get_final_targets():
    targets = get_intermediates()
    for s in SETTINGS:
        targets += [
            t.format(setting=s)
            for t in (
                P.metrics,
                P.correlations,
                P.sensitivity,
                P.ranking,
                P.ranking_md,
                P.outcome_md,
            )
        ]
    for s in LM_SETTINGS:
        targets.append(P.scratch_metrics.format(setting=s))
    targets += [P.summary, P.table4, P.table4_md]
    for fig in FIGURES:
        targets += [P.figure.format(figure=fig), P.figure_pdf.format(figure=fig)]
    return targets


def trained_labels(wildcards):
    return [list(key) for key in get_trained_checkpoints(wildcards)]


def get_groups(wildcards):
    """phi*'s first group (M_0's) and its hidden groups (M0_all's)."""
    base = archs.make(get_model(wildcards))
    return {"first": archs.first_group(base), "hidden": archs.hidden_groups(base)}


# What each figure shows, for its entry in the report (`snakemake --report`).
FIGURE_TITLES = {
    "figure1": "loss along linear paths between permuted minima",
    "figure2": "Kendall tau at t = 0 of every score with G_T*",
    "figure3": "G_t, M_t and Kendall tau over epochs",
    "figure4": "G_t and M_t over epochs, per setting or expansion kind",
    "figure5": "G_t, M_t and Kendall tau over epochs",
    "figure6": "Kendall tau of M_0 over the (q, n) grid",
    "figure7": "Spearman and Pearson at t = 0 of every score with G_T*",
    "figure8": "Kendall tau of M_0 over the (q, n) grid",
    "figure9": "G_t, M_t and Kendall tau over epochs",
    "figure10": "G_t and M_t over epochs, per setting or expansion kind",
    "figure11": "BERT from random initialisation; attention heads permuted",
}


def figure_report(name):
    """The png of a figure in the report: category Figures, one subcategory
    per figure, its caption workflow/report/<name>.rst."""
    spec = FIGURES.get(name, {})
    settings = spec.get("settings") or [spec[k] for k in ["setting"] if k in spec]
    number = name[len("figure") :]
    return report(
        P.figure.format(figure=name),
        caption=f"../report/{name}.rst",
        category="Figures",
        subcategory=f"Figure {number}: {FIGURE_TITLES[name]}",
        labels={"figure": f"Figure {number}", "settings": ", ".join(settings)},
    )


def figure_outputs(name):
    return {"png": figure_report(name), "pdf": P.figure_pdf.format(figure=name)}
