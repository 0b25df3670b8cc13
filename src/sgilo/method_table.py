"""The reconstruction methods, a row each: everything the Snakefile, the params' validation, the report and the CLI
know about a method, without torch. `sgilo.methods` has the class that runs each row (`METHOD_CLASSES`, same names).

Adding a method is a row here and a class there; a method with a hyper-parameter to tune also names the
`evaluate.tune` key that lists its candidates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str  # one line for `sgilo reconstruct --help`
    color: str  # in every figure, whichever subset of methods a profile runs
    uses_prior: bool = False  # needs the score stage's model.pt; keeps its chains' samples and per-pixel std
    tuned: str | None = None  # the hyper-parameter the tune step chooses on the validation images (a Method field)
    candidates: str | None = None  # the evaluate.tune key that lists its candidates
    cli_weight: float | None = None  # `sgilo reconstruct --weight`'s default for a method with a prior weight


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "csgm", "the Gaussianised w+ alone (layer 0), for as many steps as ILO's whole schedule", "tab:gray"
        ),
        MethodSpec(
            "ilo",
            "ILO's schedule within its l1 balls (--radii)",
            "tab:blue",
            tuned="radius_scale",
            candidates="ilo_radius_scale",
        ),
        MethodSpec("ilo-unconstrained", "ILO's schedule without the balls", "tab:cyan"),
        MethodSpec(
            "sgilo",
            "ILO's phases below the prior's layer as the warm start, then Langevin chains with the prior",
            "tab:red",
            uses_prior=True,
            tuned="weight",
            candidates="sgilo_weight",
            cli_weight=0.1,
        ),
        MethodSpec(
            "gnc",
            "the same warm start, then the GNC flow with the prior",
            "tab:green",
            uses_prior=True,
            tuned="weight",
            candidates="gnc_weight",
            cli_weight=0.5,
        ),
    )
}


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def prior_methods() -> tuple[str, ...]:
    """The methods that need the score model."""
    return tuple(name for name, spec in METHODS.items() if spec.uses_prior)


def tuned_methods() -> tuple[str, ...]:
    """The methods with a tune job."""
    return tuple(name for name, spec in METHODS.items() if spec.tuned is not None)


def spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]
