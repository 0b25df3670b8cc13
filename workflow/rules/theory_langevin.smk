# The SGILO paper's Theorem 3.1 on random-weight ReLU generators: no data, no trained model.
rule theory_langevin:
    input:
        code=code("stages/theory_langevin", "theory", "report", "data", "seeding"),
    output:
        json="results/theory/langevin.json",
        figure="results/theory/langevin.png",
    params:
        tracked=tracked("seed", "theory_langevin"),
    # no inputs but code: started first, beside the single-threaded download, where a core would idle
    priority: 50
    log:
        "logs/theory_langevin.log",
    benchmark:
        "logs/benchmarks/theory_langevin.tsv",
    shell:
        "{PY} -m sgilo.stages.theory_langevin --params {PARAMS_FILE} --out results/theory 2> {log}"
