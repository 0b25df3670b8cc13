# One tune job and one evaluate job per (task, level, method) cell: they run in parallel, and a changed
# setting reruns only the cells it concerns (each cell's params hold only what that cell reads).
from sgilo.method_table import METHODS, method_names, tuned_methods

EVALUATE = PARAMS.evaluate
EVAL_CELLS = [f"{entry.task}/{level:g}/{method}" for entry in EVALUATE.tasks for level in entry.levels for method in EVALUATE.methods]


wildcard_constraints:
    task="[a-z]+",
    level="[0-9.e+-]+",
    method="|".join(method_names()),


def cell_params(wildcards, tuning=False):
    """What a cell's results depend on: the shared settings, ILO's schedule and its own method's settings."""
    keys = ["seed", *(f"evaluate.{key}" for key in ("noise_std", "mask", "cs_kind", "sr_filter", "precision")),
            "evaluate.tune.validation", *(f"invert.{key}" for key in ("phases", "geocross", "perceptual", "optimize_noise"))]
    if not tuning:
        keys += ["evaluate.images", "evaluate.figure_images"]
    row = METHODS[wildcards.method]
    if row.uses_prior:
        keys.append(f"evaluate.{wildcards.method}")
    if row.tuned:
        keys.append(f"evaluate.tune.{row.candidates}")
    return tracked(*keys)


def tuned_input(wildcards):
    """Only methods with a hyper-parameter to choose have a tune job; the others run their defaults."""
    return [f"results/tune/{wildcards.task}/{wildcards.level}/{wildcards.method}.json"] if METHODS[wildcards.method].tuned else []


def tuned_flag(wildcards):
    return f"--tuned {tuned_input(wildcards)[0]}" if METHODS[wildcards.method].tuned else ""


def prior_input(wildcards):
    return [rules.score.output.model] if METHODS[wildcards.method].uses_prior else []


def score_flag(wildcards):
    return f"--score {rules.score.output.model}" if METHODS[wildcards.method].uses_prior else ""


rule tune:
    wildcard_constraints:
        method="|".join(tuned_methods()),
    input:
        index=rules.download.output.index,
        generator=rules.generator.output.generator,
        prior=prior_input,
        code=code("evaluate"),
    output:
        "results/tune/{task}/{level}/{method}.json",
    params:
        tracked=lambda wildcards: cell_params(wildcards, tuning=True),
        score=score_flag,
    log:
        "logs/tune/{task}-{level}-{method}.log",
    benchmark:
        "logs/benchmarks/tune/{task}-{level}-{method}.tsv",
    threads: EVALUATE.threads or 1  # 0: one thread a cell, as cells are many small jobs run side by side
    resources:
        gpu=1 if EVALUATE.device != "cpu" else 0,
    shell:
        "{PY} -m sgilo.stages.evaluate --params {PARAMS_FILE} --data {DATA} --generator {input.generator} {params.score}"
        " --task {wildcards.task} --level {wildcards.level} --method {wildcards.method} --threads {threads}"
        " --tune --out {output} 2> {log}"


rule evaluate:
    input:
        tuned=tuned_input,
        index=rules.download.output.index,
        generator=rules.generator.output.generator,
        prior=prior_input,
        code=code("evaluate"),
    output:
        records="results/evaluate/{task}/{level}/{method}.parquet",
        figures="results/evaluate/{task}/{level}/{method}.safetensors",
    params:
        tracked=cell_params,
        score=score_flag,
        tuned=tuned_flag,
    log:
        "logs/evaluate/{task}-{level}-{method}.log",
    benchmark:
        "logs/benchmarks/evaluate/{task}-{level}-{method}.tsv",
    threads: EVALUATE.threads or 1  # 0: one thread a cell, as cells are many small jobs run side by side
    resources:
        gpu=1 if EVALUATE.device != "cpu" else 0,
    shell:
        "{PY} -m sgilo.stages.evaluate --params {PARAMS_FILE} --data {DATA} --generator {input.generator} {params.score}"
        " --task {wildcards.task} --level {wildcards.level} --method {wildcards.method} --threads {threads}"
        " {params.tuned} --records {output.records} --figures {output.figures} 2> {log}"
