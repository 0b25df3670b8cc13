TRAJECTORIES_CODE = code("stages/trajectories", "sde", "latents", "seeding", "data")


rule trajectories_stats:
    input:
        shards=rules.invert_summary.input.shards,
        code=TRAJECTORIES_CODE,
    output:
        "results/trajectories/stats.safetensors",
    params:
        tracked=tracked("seed", "trajectories"),
    log:
        "logs/trajectories/stats.log",
    shell:
        "{PY} -m sgilo.stages.trajectories --params {PARAMS_FILE} --invert results/invert --out results/trajectories --stats 2> {log}"


# One job per invert shard: a cluster simulates shards in parallel.
rule trajectories:
    input:
        shard="results/invert/shards/shard-{shard}.safetensors",
        stats=rules.trajectories_stats.output,
        code=TRAJECTORIES_CODE,
    output:
        "results/trajectories/shards/shard-{shard}.safetensors",
    params:
        tracked=tracked("seed", "trajectories"),
        shard=lambda wildcards: int(wildcards.shard),
    log:
        "logs/trajectories/shard-{shard}.log",
    shell:
        "{PY} -m sgilo.stages.trajectories --params {PARAMS_FILE} --invert results/invert --out results/trajectories"
        " --shard {params.shard} 2> {log}"
