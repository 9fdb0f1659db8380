rule build_vocab:
    input:
        raw=get_raw_files,
    output:
        P.vocab,
    params:
        spec=get_dataset_spec,
        code=code("build_vocab.py"),
    log:
        "logs/data/{dataset}.vocab.log",
    script:
        "../scripts/build_vocab.py"


rule prepare_dataset:
    input:
        get_vocab,
        raw=get_raw_files,
    output:
        P.data,
    params:
        spec=get_dataset_spec,
        code=code("prepare_dataset.py"),
    log:
        "logs/data/{dataset}.log",
    script:
        "../scripts/prepare_dataset.py"
