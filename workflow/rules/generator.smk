rule generator:
    input:
        index=rules.download.output.index,
        code=code("stages/generator", "stylegan2", "nvidia_pickle", "gan", "precision", "seeding", "data", "fetch"),
    output:
        generator="results/generator/generator.pt",
        samples="results/generator/samples.png",
        metrics="results/generator/metrics.json",
        # the loss history exists only for a generator trained here
        **({"history": "results/generator/history.csv"} if PARAMS.generator.source == "train" else {}),
    params:
        tracked=tracked("seed", "generator"),
    log:
        "logs/generator.log",
    benchmark:
        "logs/benchmarks/generator.tsv",
    threads: workflow.cores
    shell:
        "{PY} -m sgilo.stages.generator --params {PARAMS_FILE} --data {DATA} --out results/generator 2> {log}"
