# IGO's non-affine forward iterates on a 2-D toy set and on the demo latents (invert shard 0, scaled as the score
# stage sees them), and the α of IGO's loss on the toy set.
rule theory_igo:
    input:
        latents="results/invert/shards/shard-00000.safetensors",
        stats=rules.trajectories_stats.output,
        code=code("stages/theory_igo", "theory", "report", "data", "seeding", "sde", "score_model", "latents"),
    output:
        json="results/theory/igo.json",
        figure="results/theory/igo.png",
    params:
        tracked=tracked("seed", "theory_igo", "trajectories.beta_min", "trajectories.beta_max", "trajectories.dt",
                        "trajectories.tau_fraction"),
    log:
        "logs/theory_igo.log",
    benchmark:
        "logs/benchmarks/theory_igo.tsv",
    shell:
        "{PY} -m sgilo.stages.theory_igo --params {PARAMS_FILE} --latents {input.latents} --stats {input.stats}"
        " --out results/theory 2> {log}"
