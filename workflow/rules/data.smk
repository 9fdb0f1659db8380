rule prepare_dataset:
    output:
        "results/data/{dataset}.npz",
    params:
        spec=get_dataset_spec,
    log:
        "logs/data/{dataset}.log",
    script:
        "../scripts/prepare_dataset.py"
