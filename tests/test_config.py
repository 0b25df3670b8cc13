"""params files: every section loads into a frozen dataclass; bad input names the file and the key."""

from __future__ import annotations

import dataclasses
import functools
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgilo.config import (
    Params,
    layered_params,
    load_params,
    write_layered,
)
from sgilo.loader import ConfigError, SectionError, to_dict

from conftest import REPO, write_params


def test_demo_profile_loads_with_every_section():
    params = load_params(REPO / "params.yaml")
    assert params.download.dataset == "synthfaces"
    assert params.generator.architecture.size == params.download.resolution
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.generator.train.steps = 1  # type: ignore[misc]


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*/params.yaml")), ids=lambda p: p.parent.name)
def test_every_shipped_profile_loads(profile):
    load_params(profile)


def _fields_with_defaults(cls=Params, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            yield prefix + f.name
        for inner in [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(a)]:
            yield from _fields_with_defaults(inner, f"{prefix}{f.name}.")


def test_params_yaml_is_the_one_source_of_defaults():
    # Only these keys may be left out of a profile; every other value a run uses is written in its params file.
    assert sorted(set(_fields_with_defaults())) == [
        "download.ffhq",  # the section of the dataset not chosen
        "download.ffhq.mirror_url",
        "download.synthfaces",
        "generator.pretrained",  # the section of the generator source not chosen
        "generator.pretrained.md5",
        "generator.pretrained.sha256",
        "generator.train",
        "invert.phases.radius",
    ]


def test_a_missing_key_is_named(tmp_path):
    path = tmp_path / "p.yaml"

    def without(change) -> None:
        demo = yaml.safe_load((REPO / "params.yaml").read_text())
        change(demo)
        path.write_text(yaml.safe_dump(demo))

    without(lambda demo: demo.pop("report"))
    with pytest.raises(ConfigError, match=r"p.yaml: missing key report: every key is required"):
        load_params(path)
    without(lambda demo: demo["report"].clear())
    with pytest.raises(ConfigError, match="missing keys report.confidence, report.fid_samples, report.device"):
        load_params(path)
    without(lambda demo: demo["evaluate"]["sgilo"].pop("temperature"))
    with pytest.raises(ConfigError, match="missing key evaluate.sgilo.temperature"):
        load_params(path)


def test_the_chosen_dataset_and_generator_source_need_their_sections(tmp_path):
    profile = yaml.safe_load((REPO / "profiles/ffhq/params.yaml").read_text())
    assert "synthfaces" not in profile["download"] and "train" not in profile["generator"]
    del profile["download"]["ffhq"]["mirror_url"], profile["invert"]["phases"][1]["radius"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(profile))
    params = load_params(path)  # the optional keys, left out
    assert params.download.ffhq.mirror_url == "" and params.invert.phases[1].radius is None
    assert params.download.synthfaces is None and params.generator.train is None
    for section, key in [("download", "ffhq"), ("generator", "pretrained")]:
        broken = yaml.safe_load(yaml.safe_dump(profile))
        del broken[section][key]
        path.write_text(yaml.safe_dump(broken))
        with pytest.raises(ConfigError, match=rf"{section}.{key}: missing: {section}.\w+ is '{key}'"):
            load_params(path)


def test_round_trip_through_plain_data(tmp_path):
    params = load_params(write_params(tmp_path / "p.yaml"))
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(to_dict(params)))
    assert load_params(path) == params


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        ({"generator": {"train": {"stepz": 3}}}, "generator.train.stepz", "allowed keys"),
        ({"generator": {"train": {"steps": "many"}}}, "generator.train.steps", "expected int"),
        ({"generator": {"train": {"steps": True}}}, "generator.train.steps", "expected int"),
        ({"generator": {"train": {"steps": 0}}}, "generator.train.steps", ">= 1"),
        ({"generator": {"train": {"mixing_prob": 1.5}}}, "generator.train.mixing_prob", "in [0.0, 1.0]"),
        ({"generator": {"architecture": {"size": 48}}}, "generator.architecture.size", "power of two"),
        ({"download": {"dataset": "celeba"}}, "download.dataset", "'synthfaces', 'ffhq'"),
        ({"download": {"synthfaces": [1, 2]}}, "download.synthfaces", "expected a mapping"),
        ({"colour": 1}, "colour", "allowed keys under top level"),
        ({"evaluate": {"tasks": [{"task": "sr", "levels": [2, 3]}]}}, "evaluate.tasks[0].levels", "[3.0] do not"),
        (
            {"evaluate": {"tasks": [{"task": "sr", "levels": [1.5]}]}},
            "evaluate.tasks[0].levels",
            "integer downsampling factors",
        ),
        (
            {"evaluate": {"tasks": [{"task": "sr", "levels": [64]}]}},
            "evaluate.tasks[0].levels",
            "divide generator.architecture.size (32)",
        ),
        ({"evaluate": {"tasks": [{"task": "denoise", "levels": [-0.1]}]}}, "evaluate.tasks[0].levels", "noise σ >= 0"),
        (
            {"trajectories": {"sde": "catmap"}},
            "trajectories.sde",
            "sgilo, gnc, which need an SDE with a closed-form marginal",
        ),
        (
            {"trajectories": {"sde": "lotka_volterra"}, "evaluate": {"methods": ["ilo", "gnc"]}},
            "trajectories.sde",
            "has gnc",
        ),
        # rules between one section's own keys: the section dataclass's __post_init__ (SectionError)
        (
            {"trajectories": {"beta_min": 5.0, "beta_max": 1.0}},
            "trajectories.beta_max",
            "must be >= trajectories.beta_min",
        ),
        ({"evaluate": {"gnc": {"t_min": 0.5, "t_max": 0.1}}}, "evaluate.gnc.t_min", "must be <= t_max"),
        ({"evaluate": {"tasks": [{"task": "cs", "levels": [0.1]}] * 2}}, "evaluate.tasks", "each task once"),
        (
            {"evaluate": {"tasks": [{"task": "inpaint", "levels": [1.5]}]}},
            "evaluate.tasks[0].levels",
            "fractions in (0, 1]",
        ),
        ({"invert": {"layer": 1}}, "invert.phases", "must rise and end at invert.layer (1)"),
        ({"theory_igo": {"sde": "ou"}}, "theory_igo.sde", "unknown SDE 'ou'"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, overrides, key, expected):
    path = write_params(tmp_path / "bad.yaml", overrides)
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message and key in message and expected in message


@pytest.mark.parametrize(
    ("section", "values", "keys"),
    [
        ("trajectories", {"beta_min": 5.0, "beta_max": 1.0}, "beta_max"),
        ("evaluate.gnc", {"t_min": 0.5, "t_max": 0.1}, "t_min"),
        ("theory_igo", {"times": ()}, "times and .alphas"),
        ("theory_gnc", {"means": (0.0,)}, "weights, .means and .stds"),
    ],
)
def test_a_sections_own_rules_hold_wherever_it_is_built(section, values, keys):
    """The rules between a section's own keys live beside its dataclass: code that builds one directly (the CLI, a
    benchmark) meets them too, not only a params file."""
    demo = load_params(REPO / "params.yaml")
    with pytest.raises(SectionError) as error:
        dataclasses.replace(functools.reduce(getattr, section.split("."), demo), **values)
    assert error.value.keys == keys


def test_an_old_profile_with_invert_stages_is_told_the_new_key(tmp_path):
    """invert.stages (ILO's layer schedule) became invert.phases: the demo profile as it was fails with the rename."""
    text = (REPO / "params.yaml").read_text()
    assert text.count("\n  phases:") == 1
    path = tmp_path / "old.yaml"
    path.write_text(text.replace("\n  phases:", "\n  stages:"))
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message and "invert.stages is no longer a key" in message and "invert.phases" in message


def test_an_old_profile_with_generator_train_threads_is_told_where_it_went(tmp_path):
    demo = yaml.safe_load((REPO / "params.yaml").read_text())
    demo["generator"]["train"]["threads"] = demo["generator"].pop("threads")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(demo))
    with pytest.raises(ConfigError, match="generator.train.threads is no longer a key: moved to generator.threads"):
        load_params(path)


def test_valid_task_levels_and_a_drift_without_prior_methods_load(tmp_path):
    path = write_params(
        tmp_path / "ok.yaml",
        {
            "trajectories": {
                "sde": "catmap"
            },  # no prior method evaluates with it: allowed (the IGO experiments use it)
            "evaluate": {
                "methods": ["csgm", "ilo"],
                "tasks": [{"task": "sr", "levels": [1, 2, 4]}, {"task": "denoise", "levels": [0.0, 0.2]}],
            },
        },
    )
    assert [t.task for t in load_params(path).evaluate.tasks] == ["sr", "denoise"]


def test_unparseable_yaml_and_missing_file_are_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("generator: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_params(path)
    with pytest.raises(ConfigError, match="nowhere.yaml.*not found"):
        load_params(tmp_path / "nowhere.yaml")


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    section=st.sampled_from(["train", "architecture"]),
    key=st.sampled_from(
        ["steps", "batch_size", "lr", "r1_gamma", "mixing_prob", "size", "style_dim", "channel_max", "n_mlp"]
    ),
    value=_scalars,
)
def test_any_mistyped_value_is_rejected_with_its_key_or_accepted_as_valid(tmp_path, section, key, value):
    """Property: a value either loads into a valid config or fails naming its dotted key — never anything else."""
    path = write_params(tmp_path / "h.yaml", {"generator": {section: {key: value}}})
    try:
        params = load_params(path)
    except ConfigError as exc:
        assert f"generator.{section}.{key}" in str(exc) and str(path) in str(exc)
        return
    loaded = getattr(getattr(params.generator, section), key)
    assert loaded == value and not isinstance(value, bool)


def test_cli_check_params_reports_the_key(tmp_path, capsys):
    from sgilo.cli import main

    path = write_params(tmp_path / "bad.yaml", {"generator": {"train": {"lr": "fast"}}})
    with pytest.raises(SystemExit) as exit_info:
        main(["check-params", str(path)])
    assert exit_info.value.code == 2
    assert "generator.train.lr" in capsys.readouterr().err
    main(["check-params", str(REPO / "params.yaml")])
    assert '"dataset": "synthfaces"' in capsys.readouterr().out


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_rejected_naming_the_key(tmp_path, value):
    """NaN passes every range comparison, so it needs its own check (found by the property test above)."""
    path = write_params(tmp_path / "h.yaml", {"generator": {"train": {"lr": value}}})
    with pytest.raises(ConfigError, match="generator.train.lr: expected a finite float"):
        load_params(path)


# What profiles/ffhq-smoke/params.yaml may change of profiles/ffhq/params.yaml: where the inputs come from, the
# machine it runs on, and counts. Every other key - every switch and every shape - must be the FFHQ profile's.
SMOKE_SOURCES = {
    "download.ffhq.metadata_url",
    "download.ffhq.metadata_size",
    "download.ffhq.metadata_md5",
    "download.ffhq.mirror_url",
    "generator.pretrained.url",
    "generator.pretrained.sha256",
    "generator.pretrained.md5",
}
SMOKE_MACHINE = {
    "download.ffhq.workers",
    "download.ffhq.retries",
    "generator.pretrained.retries",
    "download.ffhq.timeout_s",
    *(f"{section}.{key}" for section in ("invert", "score", "evaluate") for key in ("precision", "device")),
    "report.device",
}
SMOKE_COUNTS = {
    "download.ffhq.index_start",
    "download.ffhq.index_stop",
    "generator.latent_avg_samples",
    "generator.grid_rows",
    *(f"invert.phases[{i}].steps" for i in range(4)),
    "invert.images",
    "invert.shard_size",
    "invert.batch_size",
    "trajectories.draws",
    "score.epochs",
    "score.batch_size",
    "score.warmup_steps",
    "score.samples",
    "score.sample_steps",
    "evaluate.images",
    "evaluate.batch_size",
    "evaluate.sgilo.steps",
    "evaluate.sgilo.chains",
    "evaluate.gnc.steps",
    "evaluate.tune.validation",
    "evaluate.figure_images",
    "report.fid_samples",
}
# Lists the smoke profile may shorten, keeping only values of the FFHQ profile's.
SMOKE_SUBSETS = {
    *(f"evaluate.tasks[{i}].levels" for i in range(3)),
    "evaluate.tune.ilo_radius_scale",
    "evaluate.tune.sgilo_weight",
    "evaluate.tune.gnc_weight",
}


def _flat(value, key: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for name, item in value.items() for k, v in _flat(item, f"{key}.{name}" if key else name).items()}
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{key}[{i}]").items()}
    return {key: value}


def _smoke_drift(real: dict, smoke: dict) -> list[str]:
    a, b = _flat(real), _flat(smoke)
    problems = [
        f"{key}: only in {'the FFHQ profile' if key in a else 'the smoke profile'}"
        for key in sorted(a.keys() ^ b.keys())
    ]
    for key in sorted(a.keys() & b.keys()):
        if key in SMOKE_SUBSETS:
            if not b[key] or not set(b[key]) <= set(a[key]):
                problems.append(f"{key}: {b[key]} is not a non-empty subset of {a[key]}")
        elif a[key] != b[key] and key not in SMOKE_SOURCES | SMOKE_MACHINE | SMOKE_COUNTS:
            problems.append(f"{key}: {b[key]!r} in the smoke profile, {a[key]!r} in the FFHQ profile")
    return problems


def test_the_ffhq_smoke_profile_differs_from_the_ffhq_profile_only_in_counts_sources_and_machine():
    real = yaml.safe_load((REPO / "profiles" / "ffhq" / "params.yaml").read_text())
    smoke = yaml.safe_load((REPO / "profiles" / "ffhq-smoke" / "params.yaml").read_text())
    assert _smoke_drift(real, smoke) == []
    # the check itself catches a changed switch, a changed shape, a missing key and a level the paper does not use
    assert _smoke_drift(real, {**smoke, "invert": {**smoke["invert"], "optimize_noise": False}}) == [
        "invert.optimize_noise: False in the smoke profile, True in the FFHQ profile"
    ]
    assert _smoke_drift(real, {**smoke, "invert": {**smoke["invert"], "layer": 2}})
    assert _smoke_drift(
        real, {**smoke, "score": {**smoke["score"], "model": {**smoke["score"]["model"], "width": 128}}}
    )
    assert _smoke_drift(
        real, {**smoke, "trajectories": {k: v for k, v in smoke["trajectories"].items() if k != "dt"}}
    ) == ["trajectories.dt: only in the FFHQ profile"]
    tasks = [{**smoke["evaluate"]["tasks"][0], "levels": [0.5]}, *smoke["evaluate"]["tasks"][1:]]
    assert _smoke_drift(real, {**smoke, "evaluate": {**smoke["evaluate"], "tasks": tasks}})


def test_layers_lay_keys_over_the_profile_in_order_and_name_the_layer_of_a_bad_key(tmp_path):
    """Snakemake's --configfile (first: the profile, then overlays) and --config, as the Snakefile passes them."""
    profile = write_params(tmp_path / "profile.yaml")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"invert": {"images": 5, "batch_size": 2}, "evaluate": {"methods": ["csgm"]}}))
    # Snakemake parses a nested --config value with YAML's BaseLoader: every scalar arrives as a string
    params, raw = layered_params(
        [profile, overlay], {"invert": {"images": "7"}, "seed": 11, "evaluate": {"methods": ["ilo", "sgilo"]}}
    )
    assert (params.invert.images, params.invert.batch_size, params.seed) == (7, 2, 11)
    assert params.evaluate.methods == ("ilo", "sgilo")  # a list replaces, it does not merge
    assert params.invert.layer == load_params(profile).invert.layer  # keys no layer names stay the profile's
    assert raw["invert"]["images"] == 7 and load_params(profile) != params
    assert layered_params([profile])[0] == load_params(profile)
    with pytest.raises(ConfigError, match=r"^--config: unknown key invert\.imags"):
        layered_params([profile], {"invert": {"imags": "3"}})
    with pytest.raises(ConfigError, match=r"^--config: invert\.images: expected int"):
        layered_params([profile], {"invert": {"images": "many"}})
    overlay.write_text(yaml.safe_dump({"score": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=rf"^{overlay}: unknown key score\.epochz"):
        layered_params([profile, overlay])
    overlay.write_text("- a list\n")
    with pytest.raises(ConfigError, match=rf"^{overlay}: top level: expected a mapping"):
        layered_params([profile, overlay])


def test_the_merged_params_file_is_named_by_its_content_and_reads_back_the_same(tmp_path):
    params, raw = layered_params([write_params(tmp_path / "profile.yaml")], {"seed": 5})
    first = write_layered(raw, tmp_path / "merged")
    assert write_layered(raw, tmp_path / "merged") == first and load_params(first) == params
    other = write_layered(layered_params([tmp_path / "profile.yaml"], {"seed": 6})[1], tmp_path / "merged")
    assert other != first and load_params(other).seed == 6
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == sorted(
        [first.name, other.name]
    )  # no temporary left
