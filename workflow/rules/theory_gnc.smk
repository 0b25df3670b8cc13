# Kobler & Pock's Fig. 1 in 1-D: no data, no generator; part of `all`, not of results/table1.csv.
rule theory_gnc:
    input:
        code=code("stages/theory_gnc", "theory", "report", "data"),
    output:
        json="results/theory/gnc.json",
        figure="results/theory/gnc.png",
    params:
        tracked=tracked("seed", "theory_gnc"),
    log:
        "logs/theory_gnc.log",
    shell:
        "{PY} -m sgilo.stages.theory_gnc --params {PARAMS_FILE} --out results/theory 2> {log}"
