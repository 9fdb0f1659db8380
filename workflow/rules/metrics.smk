rule metrics:
    input:
        barriers=get_setting_barriers,
        logs=get_setting_logs,
        base_logs=get_base_logs,
    output:
        "results/metrics/{setting}.parquet",
    params:
        q=config["metric"]["q"],
        n=config["metric"]["n"],
        epochs=EPOCHS,
    log:
        "logs/metrics/{setting}.log",
    script:
        "../scripts/metrics.py"


rule correlations:
    input:
        "results/metrics/{setting}.parquet",
    output:
        "results/correlations/{setting}.parquet",
    params:
        main_q=config["metric"]["main_q"],
        main_n=config["metric"]["main_n"],
    log:
        "logs/correlations/{setting}.log",
    script:
        "../scripts/correlations.py"
