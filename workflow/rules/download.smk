rule download:
    input:
        code=code("download"),
    output:
        index=f"{DATA}/index.csv",
    params:
        tracked=tracked("seed", "download"),
    log:
        "logs/download.log",
    benchmark:
        "logs/benchmarks/download.tsv",
    threads: 1  # writes or fetches files; FFHQ's parallel downloads are download.ffhq.workers
    shell:
        "{PY} -m sgilo.stages.download --params {PARAMS_FILE} --out {DATA} --threads {threads} 2> {log}"
