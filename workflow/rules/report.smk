# Table 1, its figures and report.md (with the theory rules' figures) from every evaluate cell (EVAL_CELLS, "task/level/method", from evaluate.smk).
REPORT_TASKS = [t.task for t in PARAMS.evaluate.tasks]
# The posterior figure exists only when SGILO is evaluated; declaring it otherwise would make the rule never finish.
REPORT_POSTERIOR = {"posterior": "results/figures/posterior.png"} if "sgilo" in PARAMS.evaluate.methods else {}


rule report:
    input:
        records=expand("results/evaluate/{cell}.parquet", cell=EVAL_CELLS),
        images=expand("results/evaluate/{cell}.safetensors", cell=EVAL_CELLS),
        score=rules.score.output.model,
        generator=rules.generator.output.generator,
        index=rules.download.output.index,
        invert_summary=rules.invert_summary.output,
        theory=[rules.theory_gnc.output.json, rules.theory_langevin.output.json, rules.theory_igo.output.json],
        code=code("stages/report", "report", "data", "metrics", "posterior", "score_model", "sde", "latents", "inversion", "precision",
                  "stylegan2", "nvidia_pickle", "seeding"),
    output:
        table="results/table1.csv",
        paired="results/paired.csv",
        curves=expand("results/figures/curves_{task}.png", task=REPORT_TASKS),
        reconstructions="results/figures/reconstructions.png",
        speed="results/figures/speed.png",
        markdown="results/report.md",
        prior_samples="results/figures/prior_samples.png",
        prior="results/prior.json",
        metrics="results/metrics.json",
        curve_data=expand("results/plots/curves_{task}.csv", task=REPORT_TASKS),
        speed_data="results/plots/speed.csv",
        **REPORT_POSTERIOR,
    params:
        tracked=tracked("seed", "report", "score.sample_steps"),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv",
    shell:
        "{PY} -m sgilo.stages.report --params {PARAMS_FILE} --evaluate results/evaluate --score {input.score}"
        " --generator {input.generator} --data {DATA} --invert-summary {input.invert_summary}"
        " --theory {input.theory} --out results 2> {log}"
