# The single definition of the sgilo pipeline. Each rule runs one thin stage module (python -m sgilo.stages.<rule>)
# and lists, as inputs, the code it runs and, as params, the params keys it reads: changing either reruns that rule
# and what depends on it, nothing else. dvc.yaml is generated from it (`sgilo dvc-sync`, docs/sharing.md).
#
#   snakemake --cores all                                                  # demo profile (params.yaml)
#   snakemake --cores all --configfile profiles/ffhq/params.yaml           # another profile
#   snakemake --cores all --config 'invert={images: 64}' 'seed=1'          # override keys of the profile
import sys
from functools import reduce
from pathlib import Path

from sgilo import code_graph
from sgilo.config import layered_params, write_layered
from sgilo.loader import ConfigError, to_dict

# Snakemake's configuration, validated by sgilo.config: params.yaml is the default config file; `--configfile FILE`
# selects a profile instead of it (a profile is complete on its own: sgilo.config requires every key but a few optional
# ones, and never takes the demo's), further --configfile files and then `--config` lay keys over it. A wrong key or
# value stops here, naming the file or --config, before any job starts. When layers or overrides were given, the
# stages read the merged params from one file named by its content. (No `configfile:` directive: Snakemake would
# merge params.yaml under every profile.)
CONFIG = workflow.config_settings
if "params" in CONFIG.config:
    sys.exit("error: --config params=FILE is gone: select a profile with Snakemake's own --configfile FILE "
             "(e.g. --configfile profiles/ffhq/params.yaml)")
PROFILE_FILES = [Path(path) for path in CONFIG.configfiles] or [Path("params.yaml")]
try:
    PARAMS, PARAMS_RAW = layered_params(PROFILE_FILES, CONFIG.config)
except ConfigError as error:
    sys.exit(f"error: {error}")
if len(PROFILE_FILES) == 1 and not CONFIG.config:
    PARAMS_FILE = PROFILE_FILES[0].absolute()
    PARAMS_FILE = str(PARAMS_FILE.relative_to(Path.cwd()) if PARAMS_FILE.is_relative_to(Path.cwd()) else PARAMS_FILE)
else:
    PARAMS_FILE = str(write_layered(PARAMS_RAW, ".snakemake/sgilo"))
PY = sys.executable
SRC = Path(workflow.basedir) / "src" / "sgilo"
DATASET = PARAMS.download.dataset
DATA = f"data/{DATASET}"


def code(stage):
    """The source files stage `stage` runs (sgilo.code_graph: its module and every sgilo module it imports,
    transitively): a rule's code inputs, so editing any of them reruns the rule, and nothing else does."""
    return [str(path) for path in code_graph.sources(f"sgilo.stages.{stage}", SRC.parent)]


def tracked(*keys, without=()):
    """The params values a rule's results depend on, by dotted key ("invert", "evaluate.tune.validation"): Snakemake
    reruns the rule when one changes, and `sgilo dvc-sync` lists the same keys as the DVC stage's params. `without`:
    keys inside those that the rule does not read; their section is then tracked key by key, the rest of it.
    Thread counts are never tracked: they change how float sums are split, so last bits differ, but not the results,
    as another CPU model does (benchmarks/determinism.py measures it; docs/reliability.md, "Determinism"); a changed
    count reruns nothing."""
    values = to_dict(PARAMS)
    skip = {*without, *THREAD_KEYS}

    def expand(key, value):
        if not any(other.startswith(key + ".") for other in skip):
            return {key: value}
        return {full: item for sub, part in value.items() if (name := f"{key}.{sub}") not in skip
                for full, item in expand(name, part).items()}

    return {full: item for key in keys for full, item in expand(key, reduce(lambda node, part: node[part], key.split("."), values)).items()}


def _thread_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _thread_keys(value, f"{prefix}{key}.")
        elif key == "threads":
            yield prefix + key


THREAD_KEYS = set(_thread_keys(to_dict(PARAMS)))


def rule_threads(requested):
    """A rule's `threads:` from its params key: 0 is every core Snakemake was given (--cores caps any count; where
    it was given none, as for `snakemake --report` or a cluster, 1, and a profile's set-threads decides). The rule
    passes it to the stage as --threads."""
    return requested or workflow.resource_settings.cores or 1


# What DVC tracks for a rule beyond its outputs: the download rule's index.csv, written last, marks a complete dataset
# directory, and that directory is what a teammate must pull.
DVC_OUTS = {"download": [DATA]}


# `snakemake --report results/report.html`: the figures and tables marked report() in the rules, with their captions
report: "workflow/report/workflow.rst"


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


# A cluster job that SLURM ended for its memory or time: name the rule and the resource to raise (sgilo.cluster).
onerror:
    from sgilo.cluster import print_resource_hints

    print_resource_hints(log)
