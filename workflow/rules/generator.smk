rule generator:
    input:
        index=rules.download.output.index,
        code=code("stages/generator", "stylegan2", "nvidia_pickle", "gan", "precision", "seeding", "data", "fetch"),
    output:
        generator="results/generator/generator.pt",
        samples="results/generator/samples.png",
        metrics="results/generator/metrics.json",
        history="results/generator/history.csv",
    params:
        tracked=tracked("seed", "generator"),
    log:
        "logs/generator.log",
    threads: workflow.cores
    shell:
        "{PY} -m sgilo.stages.generator --params {PARAMS_FILE} --data {DATA} --out results/generator 2> {log}"
