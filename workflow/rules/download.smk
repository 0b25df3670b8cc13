rule download:
    input:
        code=code("stages/download", "synthfaces", "ffhq", "fetch", "data"),
    output:
        index=f"{DATA}/index.csv",
    params:
        tracked=tracked("seed", "download"),
    log:
        "logs/download.log",
    benchmark:
        "logs/benchmarks/download.tsv",
    shell:
        "{PY} -m sgilo.stages.download --params {PARAMS_FILE} --out {DATA} 2> {log}"
