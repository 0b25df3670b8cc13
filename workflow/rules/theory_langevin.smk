# The SGILO paper's Theorem 3.1 on random-weight ReLU generators: no data, no trained model.
rule theory_langevin:
    input:
        code=code("theory_langevin"),
    output:
        json="results/theory/langevin.json",
        figure=report("results/theory/langevin.png", caption="../report/theory_langevin.rst", category="4. Theory", labels={"figure": "Langevin on random generators"}),
    params:
        tracked=tracked("seed", "theory_langevin"),
    # no inputs but code: started first, beside the single-threaded download, where a core would idle
    priority: 50
    log:
        "logs/theory_langevin.log",
    benchmark:
        "logs/benchmarks/theory_langevin.tsv",
    threads: 1  # small tensors: a second thread costs more than it gives
    shell:
        "{PY} -m sgilo.stages.theory_langevin --params {PARAMS_FILE} --json {output.json} --figure {output.figure} --threads {threads} 2> {log}"
