# The single definition of the sgilo pipeline. Each rule runs one thin stage module (python -m sgilo.stages.<rule>)
# and lists, as inputs, the code it runs and, as params, its params.yaml section: changing either reruns that rule
# and what depends on it, nothing else.
#
#   snakemake --cores all                                   # demo profile (params.yaml)
#   snakemake --cores all --config params=profiles/ffhq/params.yaml
import sys
from pathlib import Path

from sgilo.config import ConfigError, load_params, to_dict

PARAMS_FILE = config.get("params", "params.yaml")
try:
    PARAMS = load_params(PARAMS_FILE)  # fails here, naming file and key, before any job starts
except ConfigError as error:
    sys.exit(f"error: {error}")
PY = sys.executable
SRC = Path(workflow.basedir) / "src" / "sgilo"
DATASET = PARAMS.download.dataset
DATA = f"data/{DATASET}"


def code(*modules):
    """Source files of the given sgilo modules (config and io are shared by every stage)."""
    return [str(SRC / f"{m}.py") for m in ("config", "io", "stages/_common", *modules)]


def section(name):
    return {"seed": PARAMS.seed, name: to_dict(getattr(PARAMS, name))}


include: "workflow/rules/download.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/invert.smk"
include: "workflow/rules/trajectories.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.generator.output,
        rules.invert_summary.output,
        rules.score.output,
        rules.report.output,
