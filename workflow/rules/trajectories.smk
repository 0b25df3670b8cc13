# What the score model trains on: the inverted latents ("shards") and those drawn from the generator ("generated").
LATENT_SHARDS = [f"shards/shard-{i}" for i in INVERT_SHARDS] + [f"generated/shard-{i}" for i in GENERATED_SHARDS]


rule trajectories_stats:
    input:
        shards=expand("results/invert/{shard}.safetensors", shard=LATENT_SHARDS),
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
        "{PY} -m sgilo.stages.trajectories --params {PARAMS_FILE} --invert results/invert --out results/trajectories --stats --threads {threads} 2> {log}"


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
        which=lambda wildcards: f"--{'shard' if wildcards.kind == 'shards' else 'generated'} {int(wildcards.shard)}",
    priority: 40  # the prior's path first, as invert
    log:
        "logs/trajectories/{kind}-{shard}.log",
    benchmark:
        "logs/benchmarks/trajectories/{kind}-{shard}.tsv",
    threads: rule_threads(PARAMS.trajectories.threads)
    shell:
        "{PY} -m sgilo.stages.trajectories --params {PARAMS_FILE} --invert results/invert --out results/trajectories"
        " {params.which} --threads {threads} 2> {log}"
