rule metrics:
    input:
        barriers=get_setting_barriers,
        logs=get_setting_logs,
    output:
        "results/metrics/{setting}.parquet",
    params:
        q=config["metric"]["q"],
        n=config["metric"]["n"],
        epochs=lambda w: epochs_of(w.setting),
    log:
        "logs/metrics/{setting}.log",
    script:
        "../scripts/metrics.py"


use rule metrics as metrics_group with:
    output:
        "results/metrics/{setting}.{group}.parquet",
    log:
        "logs/metrics/{setting}.{group}.log",


# Figure 11 (i): the manifold size of a BERT over training from random
# initialisation, relative to epoch 1's.
rule scratch_metrics:
    input:
        get_scratch_barriers,
    output:
        "results/scratch/{setting}.parquet",
    params:
        q=config["metric"]["q"],
        n=config["metric"]["main_n"],
    log:
        "logs/scratch/{setting}.log",
    script:
        "../scripts/scratch_metrics.py"


rule proxies:
    input:
        unpack(get_proxy_checkpoints),
        data=get_dataset_npz,
    output:
        "results/proxies/{setting}.parquet",
    params:
        batch_size=config["metric"]["batch_size"],
    log:
        "logs/proxies/{setting}.log",
    script:
        "../scripts/proxies.py"


rule correlations:
    input:
        metrics="results/metrics/{setting}.parquet",
        proxies=get_proxies,
    output:
        correlations="results/correlations/{setting}.parquet",
        sensitivity="results/sensitivity/{setting}.parquet",
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
    log:
        "logs/correlations/{setting}.log",
    script:
        "../scripts/correlations.py"


rule correlation_summary:
    input:
        expand("results/correlations/{setting}.parquet", setting=SETTINGS),
    output:
        "results/tables/correlations_summary.parquet",
    log:
        "logs/tables/correlations_summary.log",
    script:
        "../scripts/correlation_summary.py"


rule table4:
    input:
        unpack(get_table4_checkpoints),
        data=lambda w: sorted({f"results/data/{SETTINGS[s]['dataset']}.npz" for s in IMAGE_SETTINGS}),
    output:
        parquet="results/tables/table4.parquet",
        md="results/tables/table4.md",
    params:
        n=config["metric"]["n_max"],
        batch_size=config["metric"]["batch_size"],
        chunk=config["metric"].get("chunk"),
        datasets={s: SETTINGS[s]["dataset"] for s in IMAGE_SETTINGS},
        seed=SEEDS[0],
    log:
        "logs/tables/table4.log",
    script:
        "../scripts/table4.py"
