rule score:
    input:
        shards=expand("results/trajectories/{shard}.safetensors", shard=LATENT_SHARDS),
        stats=rules.trajectories_stats.output,
        invert=rules.invert_summary.input.shards,
        generator=rules.generator.output.generator,
        code=code("score"),
    output:
        model="results/score/model.pt",
        samples=report("results/score/samples.png", caption="../report/score_samples.rst", category="2. Prior",
                       labels={"figure": "score-model samples"}),
        loss=report("results/score/loss.png", caption="../report/score_loss.rst", category="2. Prior", labels={"figure": "training loss"}),
        history="results/score/history.csv",
        metrics="results/score/metrics.json",
    params:
        tracked=tracked("seed", "trajectories", "score"),
    priority: 40  # the prior's path first, as invert
    log:
        "logs/score.log",
    benchmark:
        "logs/benchmarks/score.tsv",
    threads: rule_threads(PARAMS.score.threads)
    resources:
        gpu=1 if PARAMS.score.device != "cpu" else 0,
    shell:
        "{PY} -m sgilo.stages.score --params {PARAMS_FILE} --trajectories {input.shards} --stats {input.stats}"
        " --invert {input.invert} --generator {input.generator} --model {output.model} --samples {output.samples}"
        " --loss {output.loss} --history {output.history} --metrics {output.metrics} --threads {threads} 2> {log}"
