# The single definition of the sgilo pipeline. Each rule runs one thin stage module (python -m sgilo.stages.<rule>)
# and lists, as inputs, the code it runs and, as params, the params.yaml keys it reads: changing either reruns that rule
# and what depends on it, nothing else. dvc.yaml is generated from it (`sgilo dvc-sync`, docs/sharing.md).
#
#   snakemake --cores all                                   # demo profile (params.yaml)
#   snakemake --cores all --config params=profiles/ffhq/params.yaml
import sys
from functools import reduce
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
    """Source files of the given sgilo modules (config, io and allocator are shared by every stage)."""
    return [str(SRC / f"{m}.py") for m in ("config", "io", "allocator", "stages/_common", *modules)]


def tracked(*keys, without=()):
    """The params values a rule's results depend on, by dotted key ("invert", "evaluate.tune.validation"): Snakemake
    reruns the rule when one changes, and `sgilo dvc-sync` lists the same keys as the DVC stage's params. `without`:
    keys inside those that the rule does not read; their section is then tracked key by key, the rest of it."""
    values = to_dict(PARAMS)

    def expand(key, value):
        if not any(skip.startswith(key + ".") for skip in without):
            return {key: value}
        return {full: item for sub, part in value.items() if (name := f"{key}.{sub}") not in without
                for full, item in expand(name, part).items()}

    return {full: item for key in keys for full, item in expand(key, reduce(lambda node, part: node[part], key.split("."), values)).items()}


# What DVC tracks for a rule beyond its outputs: the download rule's index.csv, written last, marks a complete dataset
# directory, and that directory is what a teammate must pull.
DVC_OUTS = {"download": [DATA]}


include: "workflow/rules/download.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/invert.smk"
include: "workflow/rules/trajectories.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/theory_gnc.smk"
include: "workflow/rules/theory_langevin.smk"
include: "workflow/rules/theory_igo.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.generator.output,
        rules.invert_summary.output,
        rules.score.output,
        rules.report.output,
