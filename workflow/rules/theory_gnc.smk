# Kobler & Pock's Fig. 1 in 1-D: no data, no generator; its figure goes into results/report.md.
rule theory_gnc:
    input:
        code=code("theory_gnc"),
    output:
        json="results/theory/gnc.json",
        figure=report("results/theory/gnc.png", caption="../report/theory_gnc.rst", category="4. Theory", labels={"figure": "GNC in 1-D"}),
    params:
        tracked=tracked("seed", "theory_gnc"),
    # no inputs but code: started first, beside the single-threaded download, where a core would idle
    priority: 50
    log:
        "logs/theory_gnc.log",
    benchmark:
        "logs/benchmarks/theory_gnc.tsv",
    threads: 1  # small tensors: a second thread costs more than it gives
    shell:
        "{PY} -m sgilo.stages.theory_gnc --params {PARAMS_FILE} --json {output.json} --figure {output.figure} --threads {threads} 2> {log}"
