"""params files: every section loads into a frozen dataclass; bad input names the file and the key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from conftest import REPO, write_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgilo.config import ConfigError, Params, load_params, to_dict


def test_demo_profile_loads_with_every_section():
    params = load_params(REPO / "params.yaml")
    assert params.download.dataset == "synthfaces"
    assert params.generator.architecture.size == params.download.resolution
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.generator.train.steps = 1  # type: ignore[misc]


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*/params.yaml")), ids=lambda p: p.parent.name)
def test_every_shipped_profile_loads(profile):
    load_params(profile)


def test_missing_keys_take_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 5\n")
    params = load_params(path)
    assert params.seed == 5 and params.generator == Params().generator


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
        ({"evaluate": {"tasks": [{"task": "sr", "levels": [1.5]}]}}, "evaluate.tasks[0].levels", "integer downsampling factors"),
        ({"evaluate": {"tasks": [{"task": "sr", "levels": [64]}]}}, "evaluate.tasks[0].levels", "divide generator.architecture.size (32)"),
        ({"evaluate": {"tasks": [{"task": "denoise", "levels": [-0.1]}]}}, "evaluate.tasks[0].levels", "noise σ >= 0"),
        ({"trajectories": {"sde": "catmap"}}, "trajectories.sde", "sgilo, gnc, which need an SDE with a closed-form marginal"),
        ({"trajectories": {"sde": "lotka_volterra"}, "evaluate": {"methods": ["ilo", "gnc"]}}, "trajectories.sde", "has gnc"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, overrides, key, expected):
    path = write_params(tmp_path / "bad.yaml", overrides)
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message and key in message and expected in message


def test_valid_task_levels_and_a_drift_without_prior_methods_load(tmp_path):
    path = write_params(tmp_path / "ok.yaml", {
        "trajectories": {"sde": "catmap"},  # no prior method evaluates with it: allowed (the IGO experiments use it)
        "evaluate": {"methods": ["csgm", "ilo"], "tasks": [{"task": "sr", "levels": [1, 2, 4]}, {"task": "denoise", "levels": [0.0, 0.2]}]},
    })
    assert [t.task for t in load_params(path).evaluate.tasks] == ["sr", "denoise"]


def test_unparseable_yaml_and_missing_file_are_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("generator: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_params(path)
    with pytest.raises(ConfigError, match="nowhere.yaml.*not found"):
        load_params(tmp_path / "nowhere.yaml")


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.integers(), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["train", "architecture"]), key=st.sampled_from(
    ["steps", "batch_size", "lr", "r1_gamma", "mixing_prob", "size", "style_dim", "channel_max", "n_mlp"]), value=_scalars)
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
