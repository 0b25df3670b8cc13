# Table 1, its figures and report.md (with the theory rules' figures) from every evaluate cell (EVAL_CELLS, "task/level/method", from evaluate.smk).
REPORT_TASKS = [t.task for t in PARAMS.evaluate.tasks]
# The posterior figure exists only when SGILO is evaluated; declaring it otherwise would make the rule never finish.
REPORT_POSTERIOR = ({"posterior": report("results/figures/posterior.png", caption="../report/posterior.rst", category="3. Results",
                                          labels={"figure": "SGILO posterior"})}
                    if "sgilo" in PARAMS.evaluate.methods else {})


rule report:
    input:
        records=expand("results/evaluate/{cell}.parquet", cell=EVAL_CELLS),
        images=expand("results/evaluate/{cell}.safetensors", cell=EVAL_CELLS),
        score=rules.score.output.model,
        generator=rules.generator.output.generator,
        index=rules.download.output.index,
        invert_summary=rules.invert_summary.output,
        theory=[rules.theory_gnc.output.json, rules.theory_langevin.output.json, rules.theory_igo.output.json],
        theory_figures=[rules.theory_gnc.output.figure, rules.theory_langevin.output.figure, rules.theory_igo.output.figure],
        code=code("report"),
    output:
        table=report("results/table1.csv", caption="../report/table1.rst", category="3. Results", labels={"figure": "Table 1 (CSV)"}),
        table_html=report("results/table1.html", caption="../report/table1.rst", category="3. Results", labels={"figure": "Table 1"}),
        paired=report("results/paired.csv", caption="../report/paired.rst", category="3. Results", labels={"figure": "paired differences"}),
        curves=[report(f"results/figures/curves_{task}.png", caption="../report/curves.rst", category="3. Results",
                       labels={"figure": f"curves: {task}"}) for task in REPORT_TASKS],
        reconstructions=report("results/figures/reconstructions.png", caption="../report/reconstructions.rst", category="3. Results",
                               labels={"figure": "reconstructions"}),
        speed=report("results/figures/speed.png", caption="../report/speed.rst", category="3. Results", labels={"figure": "accuracy against time"}),
        markdown="results/report.md",
        prior_samples=report("results/figures/prior_samples.png", caption="../report/prior_samples.rst", category="2. Prior",
                             labels={"figure": "prior samples (FID)"}),
        prior="results/prior.json",
        metrics="results/metrics.json",
        curve_data=expand("results/plots/curves_{task}.csv", task=REPORT_TASKS),
        speed_data="results/plots/speed.csv",
        **REPORT_POSTERIOR,
    params:
        tracked=tracked("seed", "report", "score.sample_steps"),
        posterior=lambda wildcards, output: f"--posterior {output.posterior}" if "posterior" in output.keys() else "",
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv",
    threads: rule_threads(PARAMS.report.threads)
    shell:
        "{PY} -m sgilo.stages.report --params {PARAMS_FILE} --records {input.records} --images {input.images}"
        " --score {input.score} --generator {input.generator} --data {DATA} --invert-summary {input.invert_summary}"
        " --theory {input.theory} --theory-figures {input.theory_figures}"
        " --table {output.table} --table-html {output.table_html} --metrics {output.metrics} --paired {output.paired}"
        " --curves {output.curves} --curve-data {output.curve_data} --reconstructions {output.reconstructions}"
        " {params.posterior} --speed {output.speed} --speed-data {output.speed_data} --markdown {output.markdown}"
        " --prior-samples {output.prior_samples} --prior {output.prior} --threads {threads} 2> {log}"
