"""Study specs: the YAML file a user writes, validated before anything is queued, and its expansion
into runs (configuration x sweep point x seed) with readable, deterministic ids.

Why here and not in `colormamba/`: a spec is the job suite's unit of work (a study of many runs); the
library only knows one run (`RunConfig`). Every run of a spec becomes a `RunConfig` dict, so the worker,
`--local` and the report all read the same resolved configuration.

Schema (unknown keys are errors at every level)::

    study: loss_study                 # becomes an object-key segment (checked like run names)
    dataset: vcip2020                 # a dataset name in the store, a local folder (./x or /x), or
                                      # {synthetic: {n_train, n_val, n_test, size, seed}} generated on submit
    model: paper                      # model preset
    seeds: [0]
    baseline: original                # the configuration that paired differences are taken against
    recipe: {epochs: 50, batch_size: 8, lr: 1.0e-4}   # RunConfig recipe fields; a list = a sweep
    evaluation:                       # best.pt is chosen on select_split; metrics are report_split's
      {protocol: colormamba, select_split: val, report_split: test, checkpoint: best, num_samples: 4}
    configurations:
      original: {loss: original}                      # a preset of colormamba.losses
      combined: {loss: combined, weights: {vgg: [0.05, 0.1]}}   # per-term overrides, sweepable
      custom: {terms: {mse: 1.0, cosine: 0.5}}        # explicit term weights
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from colormamba.config import EvalSplit, RunConfig
from colormamba.storage import check_name

# Recipe fields of RunConfig that a spec may set (model, loss, dataset, seed and evaluation have their own
# places in the spec). A list value is a sweep, except for `betas` whose natural value is a pair.
SWEEPABLE = (
    "epochs",
    "batch_size",
    "lr",
    "lr_step_epochs",
    "lr_gamma",
    "grad_clip",
    "max_steps_per_epoch",
    "generator_steps_per_batch",
)
MAX_RUN_ID = 128


class SpecError(ValueError):
    """A spec that cannot be queued; `problems` holds one "field.path: message" line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the study spec:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticDataset(_Strict):
    n_train: int = Field(32, ge=1)
    n_val: int = Field(8, ge=1)
    n_test: int = Field(8, ge=0)  # 0: no test split (then a spec reports `val` with `checkpoint: last`)
    size: int = Field(32, ge=8, le=4096)
    seed: int = Field(0, ge=0)


class SyntheticRef(_Strict):
    synthetic: SyntheticDataset


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosNum = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegNum = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Gamma = Annotated[float, Field(gt=0, le=1)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# a value or a sweep (a non-empty list of values)
PosIntOrSweep = PosInt | Annotated[list[PosInt], Field(min_length=1)]
NonNegIntOrSweep = NonNegInt | Annotated[list[NonNegInt], Field(min_length=1)]
WeightOrSweep = Weight | Annotated[list[Weight], Field(min_length=1)]


class Recipe(_Strict):
    """The training recipe; omitted fields keep RunConfig's defaults (the study's recipe)."""

    epochs: PosIntOrSweep | None = None
    batch_size: PosIntOrSweep | None = None
    lr: PosNum | Annotated[list[PosNum], Field(min_length=1)] | None = None
    lr_step_epochs: PosIntOrSweep | None = None
    lr_gamma: Gamma | Annotated[list[Gamma], Field(min_length=1)] | None = None
    grad_clip: NonNegNum | Annotated[list[NonNegNum], Field(min_length=1)] | None = None
    max_steps_per_epoch: NonNegIntOrSweep | None = None
    generator_steps_per_batch: PosIntOrSweep | None = None
    betas: tuple[float, float] | None = None
    augment: dict[str, Any] | None = None
    model_overrides: dict[str, Any] | None = None
    scan_backend: Literal["auto", "torch", "mamba", "triton", "reference"] | None = None
    vgg_weights: str | None = None
    lpips_weights: str | None = None
    layout: Literal["auto", "vcip2020", "plain"] | None = None
    device: str | None = None
    deterministic: bool | None = None
    precision: Literal["fp32", "bf16"] | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    cancel_check_every: int | None = Field(None, ge=1)
    checkpoint_interval_s: NonNegNum | None = None


class Evaluation(_Strict):
    """How runs are scored: `best.pt` is chosen on `select_split` (which also ranks sweeps in the report);
    the reported metrics are `report_split`'s, scored with the `checkpoint` named."""

    protocol: Literal["colormamba", "plain"] = "colormamba"
    select_split: EvalSplit = "val"
    report_split: EvalSplit = "test"
    checkpoint: Literal["best", "last"] = "best"
    num_samples: int = Field(4, ge=0, le=64)

    @model_validator(mode="after")
    def _report_elsewhere(self) -> Evaluation:
        if self.select_split == self.report_split and self.checkpoint == "best":
            raise ValueError(
                f"report_split and select_split are both {self.report_split!r} with checkpoint 'best': a "
                "checkpoint chosen on a split scores too well on it (each run's best-case pick); report "
                "another split, or set checkpoint: last"
            )
        return self


class Configuration(_Strict):
    """One loss configuration: a preset (`loss`) with optional `weights` overrides, or explicit `terms`."""

    loss: str | None = None
    weights: dict[str, WeightOrSweep] = Field(default_factory=dict)
    terms: dict[str, WeightOrSweep] | None = None
    recipe: Recipe | None = None  # per-configuration deviations from the study's recipe

    @model_validator(mode="after")
    def _one_source(self) -> Configuration:
        if (self.loss is None) == (self.terms is None):
            raise ValueError("give either 'loss' (a preset name) or 'terms' (term: weight), not both or none")
        if self.terms is not None and self.weights:
            raise ValueError("'weights' overrides a preset's weights; with explicit 'terms' put them there")
        return self


class StudySpec(_Strict):
    study: str
    description: str = ""
    dataset: str | SyntheticRef
    model: str = "paper"
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)
    baseline: str | None = None
    recipe: Recipe = Field(default_factory=Recipe)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    configurations: dict[str, Configuration] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


@dataclass(frozen=True)
class RunPlan:
    """One run of a study: what the worker trains, and the labels the report groups by."""

    run_id: str  # <variant>-seed<seed>-<hash6>: readable, deterministic, an object-key segment
    variant: str  # configuration name plus sweep point, e.g. "combined+vgg=0.05"; the report's row label
    configuration: str
    seed: int
    sweep: dict[str, Any]  # the swept values of this variant, e.g. {"vgg": 0.05}
    config: dict[str, Any]  # RunConfig.to_dict() without `dataset` (the worker fills in its local copy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "variant": self.variant,
            "configuration": self.configuration,
            "seed": self.seed,
            "sweep": self.sweep,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**data)


@dataclass(frozen=True)
class Study:
    """A validated spec and its runs."""

    spec: StudySpec
    runs: list[RunPlan]

    @property
    def name(self) -> str:
        return self.spec.study

    @property
    def baseline(self) -> str:
        """The baseline configuration: the spec's, else the first one listed."""
        return self.spec.baseline or next(iter(self.spec.configurations))

    def dataset_ref(self) -> str | SyntheticRef:
        return self.spec.dataset

    def to_dict(self) -> dict[str, Any]:
        """What `studies/<study>/spec.json` holds."""
        return {
            "spec": self.spec.model_dump(mode="json", exclude_none=True),
            "baseline": self.baseline,
            "dataset": dataset_name(self.spec.dataset),
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Study:
        return cls(StudySpec.model_validate(data["spec"]), [RunPlan.from_dict(r) for r in data["runs"]])


# ---------------------------------------------------------------------------------------------------


def is_local_path(ref: str) -> bool:
    """A dataset reference that names a folder on this machine rather than a dataset in the store."""
    return ref.startswith(("/", "./", "../", "~")) or os.sep in ref


def dataset_name(ref: str | SyntheticRef) -> str:
    """The store name of a spec's dataset: its own name, or `synthetic-<hash>` for a generated one, or
    the local path itself (only `--local` accepts those)."""
    if isinstance(ref, SyntheticRef):
        return "synthetic-" + _digest(ref.synthetic.model_dump())[:10]
    return ref


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# RunConfig fields that change how a run is executed, not what it computes: not part of its id, so
# resubmitting a spec with another value finds the runs already done.
NOT_IN_RUN_ID = ("cancel_check_every", "checkpoint_interval_s")


def _changed(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run's config that differ from RunConfig's defaults: what its id hashes, so that a
    field added to RunConfig later (at a default that keeps what runs compute) leaves existing ids alone."""
    defaults = RunConfig(dataset="-").to_dict()
    return {
        k: v for k, v in config.items() if k not in NOT_IN_RUN_ID and (k not in defaults or v != defaults[k])
    }


def _fmt(value: Any) -> str:
    """A sweep value as it appears in a run name (short, key-safe)."""
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a field path, without the tags it adds for union branches."""
    keep = [
        str(p)
        for p in loc
        if not (
            isinstance(p, str)
            and (p in _UNION_TAGS or "[" in p or p.startswith(("constrained-", "function-")))
        )
    ]
    return ".".join(keep)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "SyntheticRef", "constrained-float"}


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """The "unknown key" message, naming the closest key allowed where it stands (`epoch` -> `epochs`)."""
    import difflib

    if not loc:
        return "unknown key"
    sections = {"recipe": Recipe, "evaluation": Evaluation, "configurations": Configuration,
                "dataset": SyntheticDataset}  # fmt: skip
    model = StudySpec if len(loc) == 1 else sections.get(str(loc[-2])) or sections.get(str(loc[0]))
    known = set(model.model_fields) if model else {f.name for f in dataclasses.fields(RunConfig)}
    close = difflib.get_close_matches(str(loc[-1]), sorted(known - {loc[-1]}), n=1, cutoff=0.75)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    """One line per field path; the messages of a union's branches are joined with 'or'."""
    by_loc: dict[str, list[str]] = {}
    for err in exc.errors():
        msg = _unknown_key(err["loc"]) if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        messages = by_loc.setdefault(_loc(tuple(err["loc"])) or "(top level)", [])
        if msg not in messages:
            messages.append(msg)
    # A union reports every branch: when one branch got further (a range error, a nested field), the
    # other branches' "Input should be a valid <type>" lines are noise.
    out = []
    for loc, msgs in by_loc.items():
        specific = [m for m in msgs if not m.startswith("Input should be a valid")]
        deeper = any(other.startswith(loc + ".") for other in by_loc)
        if deeper and not specific:
            continue
        out.append(f"{loc}: {' or '.join(specific or msgs)}")
    return out


def _sweep_axes(config_name: str, conf: Configuration, recipe: dict[str, Any]) -> list[tuple[str, str, list]]:
    """(kind, key, values) for each swept field: kind 'weight' (a loss term) or 'recipe'."""
    axes = []
    weights = conf.terms if conf.terms is not None else conf.weights
    for term, value in weights.items():
        if isinstance(value, list):
            axes.append(("weight", term, value))
    for key in SWEEPABLE:
        value = recipe.get(key)
        if isinstance(value, list):
            axes.append(("recipe", key, value))
    return axes


def expand(spec: StudySpec, source: str = "spec") -> Study:
    """Check everything pydantic cannot (names, loss terms, RunConfig ranges, baseline) and expand the grid.

    Raises:
        SpecError: every problem found, each prefixed with its field path.
    """
    # imported here: colormamba.losses pulls in torch and torchvision (seconds), which `status`, `list`,
    # `cancel` and `report` (they read stored studies through Study.from_dict) do not need
    from colormamba.losses import resolve_loss_config

    problems: list[str] = []
    try:
        check_name(spec.study, "study name")
    except ValueError as exc:
        problems.append(f"study: {exc}")
    if isinstance(spec.dataset, str) and not is_local_path(spec.dataset):
        try:
            check_name(spec.dataset, "dataset name")
        except ValueError as exc:
            problems.append(f"dataset: {exc}")
    if spec.baseline is not None and spec.baseline not in spec.configurations:
        problems.append(
            f"baseline: {spec.baseline!r} is not one of the configurations {sorted(spec.configurations)}"
        )
    from colormamba.models import list_presets  # the model registry is the one list of presets

    if spec.model not in list_presets():
        problems.append(f"model: unknown preset {spec.model!r}; known presets: {', '.join(list_presets())}")

    runs: list[RunPlan] = []
    ds = dataset_name(spec.dataset)
    for cname, conf in spec.configurations.items():
        try:
            check_name(cname, "configuration name")
        except ValueError as exc:
            problems.append(f"configurations.{cname}: {exc}")
            continue
        recipe = spec.recipe.model_dump(exclude_none=True)
        if conf.recipe is not None:
            recipe |= conf.recipe.model_dump(exclude_none=True)
        axes = _sweep_axes(cname, conf, recipe)
        for kind, key, values in axes:
            if not values:
                where = f"weights.{key}" if kind == "weight" else f"recipe.{key}"
                problems.append(f"configurations.{cname}.{where}: an empty sweep list")
        if any(not values for _, _, values in axes):
            continue
        for point in itertools.product(*(values for _, _, values in axes)):
            chosen = {(kind, key): v for (kind, key, _), v in zip(axes, point, strict=True)}
            weights = dict(conf.terms if conf.terms is not None else conf.weights)
            run_recipe = dict(recipe)
            for (kind, key), v in chosen.items():
                (weights if kind == "weight" else run_recipe)[key] = v
            sweep = {key: v for (_, key), v in chosen.items()}
            variant = cname + "".join(f"+{k}={_fmt(v)}" for k, v in sweep.items())
            field_path = f"configurations.{cname}" + (f" (sweep point {sweep})" if sweep else "")
            try:
                loss_source: str | dict[str, float] = conf.loss if conf.loss is not None else weights
                overrides = weights if conf.loss is not None else {}
                resolve_loss_config(loss_source, overrides)
            except ValueError as exc:
                problems.append(f"{field_path}: {exc}")
                continue
            for seed in spec.seeds:
                data = {
                    **run_recipe,
                    "dataset": "<resolved by the worker>",
                    "model": spec.model,
                    "loss": conf.loss if conf.loss is not None else weights,
                    "loss_weights": weights if conf.loss is not None else {},
                    "seed": seed,
                    "protocol": spec.evaluation.protocol,
                    "select_split": spec.evaluation.select_split,
                    "report_split": spec.evaluation.report_split,
                    "num_samples": spec.evaluation.num_samples,
                }
                try:
                    cfg = RunConfig.from_dict(data)
                except (ValueError, TypeError) as exc:
                    problems.append(f"{field_path}: {exc}")
                    break
                config = cfg.to_dict()
                del config["dataset"]
                # The evaluation's splits are hashed whatever their value: runs stored before they existed
                # (scored on val) must not be taken for runs that report test.
                evaluated = {"checkpoint": spec.evaluation.checkpoint,
                             "splits": [cfg.select_split, cfg.report_split]}  # fmt: skip
                digest = _digest({"dataset": ds, "config": _changed(config), **evaluated})
                run_id = f"{variant}-seed{seed}-{digest[:6]}"
                if len(run_id) > MAX_RUN_ID:
                    problems.append(f"{field_path}: run id {run_id!r} is longer than {MAX_RUN_ID} characters")
                    break
                runs.append(RunPlan(run_id, variant, cname, seed, sweep, config))
    if problems:
        raise SpecError(source, problems)
    return Study(spec, runs)


def parse_spec(data: Any, source: str = "spec") -> Study:
    """Validate plain data (a parsed YAML/JSON document) and expand it; raises SpecError."""
    if not isinstance(data, dict):
        raise SpecError(source, ["(top level): expected a mapping of spec fields"])
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, _pydantic_problems(exc) + _raw_problems(data)) from None
    return expand(spec, source)


def _raw_problems(data: dict[str, Any]) -> list[str]:
    """The semantic checks of `expand` that can still run when the schema check failed elsewhere, so
    that one pass lists every problem (a user fixing a spec should not discover them one at a time)."""
    from colormamba.losses import resolve_loss_config

    problems = []
    if isinstance(data.get("study"), str):
        try:
            check_name(data["study"], "study name")
        except ValueError as exc:
            problems.append(f"study: {exc}")
    model = data.get("model", "paper")
    if isinstance(model, str):
        from colormamba.models import list_presets

        if model not in list_presets():
            problems.append(f"model: unknown preset {model!r}; known presets: {', '.join(list_presets())}")
    configurations = data.get("configurations")
    if not isinstance(configurations, dict):
        return problems
    baseline = data.get("baseline")
    if isinstance(baseline, str) and baseline not in configurations:
        problems.append(f"baseline: {baseline!r} is not one of the configurations {sorted(configurations)}")
    for name, raw in configurations.items():
        try:
            conf = Configuration.model_validate(raw)
        except ValidationError:
            continue  # already reported with its path
        weights = conf.terms if conf.terms is not None else conf.weights
        first = {k: v[0] if isinstance(v, list) else v for k, v in weights.items()}
        try:
            if conf.loss is not None:
                resolve_loss_config(conf.loss, first)
            else:
                resolve_loss_config(first)
        except ValueError as exc:
            problems.append(f"configurations.{name}: {exc}")
    return problems


def load_spec(path: str | Path) -> Study:
    """Read and validate a YAML (or JSON) spec file; raises SpecError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [f"(file): cannot read it ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"(file): not valid YAML ({exc})"]) from None
    return parse_spec(data, str(path))
