# Predicting the impact of model expansion through the minima manifold.
# Stages: data -> base -> expanded -> checkpoints -> barriers -> metrics -> figures.
configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/recovery.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/barriers.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/verify.smk"


rule all:
    default_target: True
    input:
        get_final_targets(),
