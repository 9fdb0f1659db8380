# The metric tables stay out of `snakemake --report`: in the HTML a Parquet file is
# only a download, and these are the big ones (16,000 rows a setting at the paper's
# size). The small per-setting tables below and the summaries are in it.
rule metrics:
    input:
        barriers=get_setting_barriers,
        logs=get_setting_logs,
    output:
        P.metrics,
    log:
        "logs/metrics/{setting}.log",
    params:
        q=config["metric"]["q"],
        n=config["metric"]["n"],
        groups=get_groups,
        code=code("metrics.py"),
    script:
        "../scripts/metrics.py"


# Figure 11 (i): the manifold size of a BERT over training from random
# initialisation, relative to epoch 1's.
rule scratch_metrics:
    input:
        get_scratch_barriers,
    output:
        P.scratch_metrics,
    log:
        "logs/scratch/{setting}.log",
    params:
        q=config["metric"]["q"],
        n=config["metric"]["main_n"],
        code=code("scratch_metrics.py"),
    script:
        "../scripts/scratch_metrics.py"


# Zero-cost proxies, size and width of phi* and every theta^(0) (expanded
# here), every seed, on the metric's batch.
rule proxies:
    input:
        base=get_base_checkpoints,
        data=get_dataset_npz,
    output:
        report(
            P.proxies,
            caption="../report/proxies.rst",
            category="Per-setting tables",
            subcategory="{setting}",
            labels={"table": "size, width and zero-cost proxies at t = 0, Parquet"},
        ),
    log:
        "logs/proxies/{setting}.log",
    priority: FIRST
    params:
        expansions=get_expansions,
        train=get_train_hp,
        seeds=get_seeds,
        batch_size=get_metric_batch_size,
        code=code("proxies.py"),
    script:
        "../scripts/proxies.py"


rule correlations:
    input:
        metrics=P.metrics,
        scores=P.proxies,
    output:
        correlations=report(
            P.correlations,
            caption="../report/correlations.rst",
            category="Per-setting tables",
            subcategory="{setting}",
            labels={"table": "correlations of every score with G_T*, Parquet"},
        ),
        sensitivity=report(
            P.sensitivity,
            caption="../report/sensitivity.rst",
            category="Per-setting tables",
            subcategory="{setting}",
            labels={"table": "Kendall tau of M_0 over the (q, n) grid, Parquet"},
        ),
    log:
        "logs/correlations/{setting}.log",
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
        code=code("correlations.py"),
    script:
        "../scripts/correlations.py"


rule correlation_summary:
    input:
        expand(P.correlations, setting=SETTINGS),
    output:
        report(
            P.summary,
            caption="../report/correlation_summary.rst",
            category="Tables",
            subcategory="Correlations over seeds",
            labels={"table": "every correlation over seeds, Parquet"},
        ),
    log:
        "logs/tables/correlations_summary.log",
    params:
        code=code("correlation_summary.py"),
    script:
        "../scripts/correlation_summary.py"


# The prediction before training: candidates ranked by M_0, with size, width
# and proxies beside it. Needs phi*, its barrier sets and proxies (both expand
# phi* themselves); no candidate is trained.
rule ranking:
    input:
        barriers=get_initial_barriers,
        scores=P.proxies,
    output:
        table=report(
            P.ranking,
            caption="../report/ranking.rst",
            category="Rankings",
            subcategory="{setting}",
            labels={"table": "candidates ranked by M_0, Parquet"},
        ),
        md=report(
            P.ranking_md,
            caption="../report/ranking.rst",
            category="Rankings",
            subcategory="{setting}",
            labels={"table": "candidates ranked by M_0, Markdown"},
        ),
    log:
        "logs/rankings/{setting}.log",
    params:
        q=config["metric"]["main_q"],
        n=config["metric"]["main_n"],
        groups=get_groups,
        code=code("ranking.py"),
    script:
        "../scripts/ranking.py"


# After training: how the ranking fared against G_T*, and against size and
# width, the rankings a user gets for free.
rule ranking_outcome:
    input:
        P.correlations,
    output:
        report(
            P.outcome_md,
            caption="../report/outcome.rst",
            category="Rankings",
            subcategory="{setting}",
            labels={"table": "how the ranking fared after training, Markdown"},
        ),
    log:
        "logs/rankings/{setting}.outcome.log",
    params:
        code=code("ranking_outcome.py"),
    script:
        "../scripts/ranking_outcome.py"


rule table4:
    input:
        unpack(get_table4_checkpoints),
        unpack(get_table4_data),
    output:
        parquet=report(
            P.table4,
            caption="../report/table4.rst",
            category="Tables",
            subcategory="Table 4: seconds per score",
            labels={"table": "seconds per score, Parquet"},
        ),
        md=report(
            P.table4_md,
            caption="../report/table4.rst",
            category="Tables",
            subcategory="Table 4: seconds per score",
            labels={"table": "seconds per score, Markdown"},
        ),
    log:
        "logs/tables/table4.log",
    params:
        settings=list(SETTINGS),
        expansion={s: SETTINGS[s]["expansions"][largest_expansion(s)] for s in SETTINGS},
        n=config["metric"]["n_max"],
        batch_size={s: study.metric_batch_size(config, s) for s in SETTINGS},
        chunk=config["metric"].get("chunk"),
        seed={s: seeds_of(s)[0] for s in SETTINGS},
        code=code("table4.py"),
    script:
        "../scripts/table4.py"
