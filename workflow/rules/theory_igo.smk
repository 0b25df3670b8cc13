# IGO's non-affine forward iterates on a 2-D toy set and on the demo latents (invert shard 0, scaled as the score
# stage sees them), and the α of IGO's loss on the toy set.
rule theory_igo:
    input:
        latents=rules.invert_summary.input.shards[0],
        stats=rules.trajectories_stats.output,
        code=code("theory_igo"),
    output:
        json="results/theory/igo.json",
        figure=report("results/theory/igo.png", caption="../report/theory_igo.rst", category="4. Theory", labels={"figure": "IGO"}),
    params:
        tracked=tracked("seed", "theory_igo", "trajectories.beta_min", "trajectories.beta_max", "trajectories.dt",
                        "trajectories.tau_fraction"),
    log:
        "logs/theory_igo.log",
    benchmark:
        "logs/benchmarks/theory_igo.tsv",
    threads: 1  # small tensors: a second thread costs more than it gives
    shell:
        "{PY} -m sgilo.stages.theory_igo --params {PARAMS_FILE} --latents {input.latents} --stats {input.stats}"
        " --json {output.json} --figure {output.figure} --threads {threads} 2> {log}"
