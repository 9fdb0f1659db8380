rule build_vocab:
    output:
        "results/data/{dataset}.vocab.json",
    params:
        spec=get_dataset_spec,
    log:
        "logs/data/{dataset}.vocab.log",
    script:
        "../scripts/build_vocab.py"


rule prepare_dataset:
    input:
        get_vocab,
    output:
        "results/data/{dataset}.npz",
    params:
        spec=get_dataset_spec,
    log:
        "logs/data/{dataset}.log",
    script:
        "../scripts/prepare_dataset.py"
