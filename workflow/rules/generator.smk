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
        history=lambda wildcards, output: f"--history {output.history}" if "history" in output.keys() else "",
        # where generator.source: pretrained downloads the official weights (once; kept for the next run)
        weights_cache="data/weights",
    log:
        "logs/generator.log",
    benchmark:
        "logs/benchmarks/generator.tsv",
    threads: rule_threads(PARAMS.generator.threads)
    shell:
        "{PY} -m sgilo.stages.generator --params {PARAMS_FILE} --data {DATA} --cache {params.weights_cache}"
        " --generator {output.generator} --samples {output.samples} --metrics {output.metrics} {params.history}"
        " --threads {threads} 2> {log}"
