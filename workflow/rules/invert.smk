INVERT_SHARDS = [f"{i:05d}" for i in range(PARAMS.invert.shards)]
GENERATED_SHARDS = [f"{i:05d}" for i in range(PARAMS.invert.generated_shards)]
# The ILO rules do not read the generated latents' keys: a new count redraws those, it does not invert again.
INVERT_TRACKED = tracked("seed", "invert", without=("invert.generated", "invert.generated_shard_size"))


# One job per shard, so a cluster (or `--cores N`) inverts shards in parallel and a changed shard count or
# image list reruns only the shards it touches.
rule invert:
    input:
        index=rules.download.output.index,
        generator=rules.generator.output.generator,
        code=code("invert"),
    output:
        "results/invert/shards/shard-{shard}.safetensors",
    params:
        tracked=INVERT_TRACKED,
        shard=lambda wildcards: int(wildcards.shard),
    # the prior's path (invert, trajectories, score) feeds every sgilo and gnc cell: on few cores it goes first
    priority: 40
    log:
        "logs/invert/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/invert/shard-{shard}.tsv",
    threads: rule_threads(PARAMS.invert.threads)
    resources:
        gpu=1 if PARAMS.invert.device != "cpu" else 0,
    shell:
        "{PY} -m sgilo.stages.invert --params {PARAMS_FILE} --data {DATA} --generator {input.generator}"
        " --shard-index {params.shard} --out {output} --threads {threads} 2> {log}"


# Latents drawn from the generator depend on it and on these keys only (fp32 whatever invert.precision): a new ILO
# schedule does not redraw them.
rule invert_generated:
    input:
        generator=rules.generator.output.generator,
        code=code("invert"),
    output:
        "results/invert/generated/shard-{shard}.safetensors",
    params:
        tracked=tracked("seed", "invert.layer", "invert.generated", "invert.generated_shard_size", "invert.batch_size", "invert.device"),
        shard=lambda wildcards: int(wildcards.shard),
    priority: 40  # as invert: the prior's path
    log:
        "logs/invert/generated-{shard}.log",
    benchmark:
        "logs/benchmarks/invert/generated-{shard}.tsv",
    threads: rule_threads(PARAMS.invert.threads)
    resources:
        gpu=1 if PARAMS.invert.device != "cpu" else 0,
    shell:
        "{PY} -m sgilo.stages.invert --params {PARAMS_FILE} --generator {input.generator}"
        " --generated-index {params.shard} --out {output} --threads {threads} 2> {log}"


rule invert_summary:
    input:
        shards=expand("results/invert/shards/shard-{shard}.safetensors", shard=INVERT_SHARDS),
        code=code("invert"),
    output:
        "results/invert/summary.json",
    params:
        tracked=INVERT_TRACKED,
    priority: 40  # as invert
    log:
        "logs/invert/summary.log",
    benchmark:
        "logs/benchmarks/invert/summary.tsv",
    threads: 1  # reads the shards' records
    shell:
        "{PY} -m sgilo.stages.invert --params {PARAMS_FILE} --shards {input.shards} --out {output} --threads {threads} 2> {log}"
