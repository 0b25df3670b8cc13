rule generator:
    input:
        index=rules.download.output.index,
        code=code("generator"),
    output:
        generator="results/generator/generator.pt",
        samples=report("results/generator/samples.png", caption="../report/generator_samples.rst", category="1. Generator",
                       labels={"figure": "samples"}),
        metrics="results/generator/metrics.json",
        # the loss history exists only for a generator trained here
        **({"history": "results/generator/history.csv"} if PARAMS.generator.source == "train" else {}),
    params:
        tracked=tracked("seed", "generator"),
    log:
        "logs/generator.log",
    benchmark:
        "logs/benchmarks/generator.tsv",
    threads: rule_threads(PARAMS.generator.train.threads)
    shell:
        "{PY} -m sgilo.stages.generator --params {PARAMS_FILE} --data {DATA} --out results/generator --threads {threads} 2> {log}"
