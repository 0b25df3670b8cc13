# What the score model trains on: the inverted latents ("shards") and those drawn from the generator ("generated").
LATENT_SHARDS = [f"shards/shard-{i}" for i in INVERT_SHARDS] + [f"generated/shard-{i}" for i in GENERATED_SHARDS]


rule trajectories_stats:
    input:
        shards=rules.invert_summary.input.shards,
        generated=expand(rules.invert_generated.output[0], shard=GENERATED_SHARDS),
        code=code("trajectories"),
    output:
        "results/trajectories/stats.safetensors",
    params:
        tracked=tracked("seed", "trajectories"),
    priority: 40  # the prior's path first, as invert
    log:
        "logs/trajectories/stats.log",
    benchmark:
        "logs/benchmarks/trajectories/stats.tsv",
    threads: rule_threads(PARAMS.trajectories.threads)
    shell:
        "{PY} -m sgilo.stages.trajectories --params {PARAMS_FILE} --latents {input.shards}"
        " --generated-latents {input.generated} --out {output} --threads {threads} 2> {log}"


# One job per latent shard: a cluster simulates shards in parallel.
rule trajectories:
    input:
        shard="results/invert/{kind}/shard-{shard}.safetensors",
        stats=rules.trajectories_stats.output,
        code=code("trajectories"),
    output:
        "results/trajectories/{kind}/shard-{shard}.safetensors",
    wildcard_constraints:
        kind="shards|generated",
    params:
        tracked=tracked("seed", "trajectories"),
        # an invert shard's latents are inverted images (some held out), a generated shard's are drawn (none held out)
        latents=lambda wildcards: "--latents" if wildcards.kind == "shards" else "--generated-latents",
        shard=lambda wildcards: int(wildcards.shard),
    priority: 40  # the prior's path first, as invert
    log:
        "logs/trajectories/{kind}-{shard}.log",
    benchmark:
        "logs/benchmarks/trajectories/{kind}-{shard}.tsv",
    threads: rule_threads(PARAMS.trajectories.threads)
    shell:
        "{PY} -m sgilo.stages.trajectories --params {PARAMS_FILE} {params.latents} {input.shard} --stats {input.stats}"
        " --shard-index {params.shard} --out {output} --threads {threads} 2> {log}"
