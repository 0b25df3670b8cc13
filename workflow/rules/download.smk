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
    # --out is the dataset folder, which is this rule's output as DVC sees it (DVC_OUTS in the Snakefile); Snakemake
    # sees index.csv, which the stage writes last, once every image is in place.
    shell:
        "{PY} -m sgilo.stages.download --params {PARAMS_FILE} --out {DATA} --threads {threads} 2> {log}"
