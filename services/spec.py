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
    recipe: {epochs: 50, batch_size: 8, lr: 1.0e-4}   # RunConfig fields; a list = a sweep
    evaluation:                       # best.pt is chosen on select_split; metrics are report_split's
      {protocol: colormamba, select_split: val, report_split: test, checkpoint: best, num_samples: 4}
    configurations:
      original: {loss: original}                      # a preset of colormamba.losses
      combined: {loss: combined, weights: {vgg: [0.05, 0.1]}}   # per-term overrides, sweepable
      custom: {terms: {mse: 1.0, cosine: 0.5}}        # explicit term weights

The recipe is derived from `RunConfig`'s fields (all but those the spec sets in places of its own,
`SPEC_PLACES`), and every range and choice is `RunConfig.problems`'s: this module checks the structure
(unknown keys, with the closest known one) and says where the user wrote each value a run refuses
(`recipe.lr`, `configurations.X.recipe.lr`, `configurations.X.weights.T`, `model`, `evaluation.*`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from colormamba.config import ConfigError, RunConfig, field_types
from colormamba.storage import CHECKPOINT_KINDS, check_name
from colormamba.suggest import unknown
from colormamba.vocabulary import METRIC_NAMES

MAX_RUN_ID = 128
# Bounds on what a spec file may ask of the machine that reads it, checked on the YAML event and node
# stream before any Python value is built: a document of a few hundred bytes can otherwise expand (YAML
# aliases, "billion laughs") into gigabytes, or nest deep enough to exhaust the stack. Why these numbers:
# real specs are a few KB (jobs/specs/*.yaml: 1-3 KB, at most ~170 YAML events, nesting 5, no aliases), and
# the pure-Python YAML parser reads ~20 000 events a second on a CPU core, so each bound stays far above
# any real spec and keeps a hostile one's refusal well under a second.
MAX_SPEC_BYTES = 64 * 1024  # the file (20x the largest shipped spec)
MAX_SPEC_VALUES = 10_000  # scalars, lists and mappings, each alias counted as the size of what it names
MAX_SPEC_ALIASES = 100  # `*name` references (sharing a block between configurations takes a handful)
MAX_SPEC_DEPTH = 20  # lists and mappings inside each other, aliases expanded
# A study's runs, counted before its grid is expanded: planning a run takes ~2 ms and ~3 KB (RunConfig's
# checks, the resolved model), so the cap keeps an accepted grid's expansion to seconds and tens of MB
# whatever --yes and --max-runs say; a study of more runs than this is a mistake, or several studies.
MAX_STUDY_RUNS = 10_000
# A problem is one line: a value the user wrote is quoted to at most MAX_QUOTED characters, and a whole
# problem cut to MAX_PROBLEM_CHARS, so that no value (a 5 MB list) is echoed back
MAX_QUOTED = 80
MAX_PROBLEM_CHARS = 300
MAX_PROBLEMS_LISTED = 50  # the message lists these; `SpecError.problems` holds them all
# RunConfig fields that a spec sets in places of its own, and where ("{c}": the configuration's name); the
# recipe is every other field.
SPEC_PLACES = {
    "dataset": "dataset",
    "model": "model",
    "loss": "configurations.{c}.loss",  # or .terms: explicit term weights
    "loss_weights": "configurations.{c}.weights",
    "seed": "seeds",
    "protocol": "evaluation.protocol",
    "select_split": "evaluation.select_split",
    "report_split": "evaluation.report_split",
    "num_samples": "evaluation.num_samples",
}
# RunConfig fields that change how a run is executed, not what it computes: not part of its id, so
# resubmitting a spec with another value finds the runs already done (and a sweep of them is refused).
NOT_IN_RUN_ID = ("cancel_check_every", "checkpoint_interval_s")
_SCALARS = (int, float, str, bool)  # a recipe field of one of these types takes a list: a sweep
_EVALUATION_FIELDS = tuple(f for f, place in SPEC_PLACES.items() if place.startswith("evaluation."))


class SpecError(ValueError):
    """A spec that cannot be queued; `problems` holds one "field.path: message" line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = [clip(p, MAX_PROBLEM_CHARS) for p in problems]  # a value is never echoed whole
        lines = [f"  - {p}" for p in self.problems[:MAX_PROBLEMS_LISTED]]
        if len(problems) > MAX_PROBLEMS_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS_LISTED} more")
        super().__init__(f"{source}: {len(problems)} problem(s) in the study spec:\n" + "\n".join(lines))


def clip(text: str, width: int = MAX_QUOTED) -> str:
    """`text` as one line of at most `width` characters: line breaks become spaces, and a longer text
    gives up its middle for "…", so that both ends show (a field path's start, a message's hint)."""
    if len(text) > width:
        head = (width - 1) * 2 // 3
        text = text[:head] + "…" + text[len(text) - (width - 1 - head) :]
    return text.replace("\r", " ").replace("\n", " ")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticDataset(_Strict):
    n_train: int = Field(32, ge=1)
    n_val: int = Field(8, ge=1)
    n_test: int = Field(8, ge=0)  # 0: no test split (then a spec reports `val` with `checkpoint: last`)
    size: int = Field(32, ge=8, le=4096)
    seed: int = Field(0, ge=0)


class _Written(_Strict):
    """A model that remembers the order its keys were written in (`written_order`): a study's sweep axes,
    and so its run names, follow the spec's order, not the order of RunConfig's fields."""

    _written: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            model._written = tuple(data)
        return model

    def written_order(self, **dump: Any) -> dict[str, Any]:
        """`model_dump(**dump)` with the keys in the order the spec wrote them."""
        values = self.model_dump(**dump)
        return {k: values[k] for k in self._written if k in values} | values


class SyntheticRef(_Strict):
    synthetic: SyntheticDataset


def _sweep_of(kind: Any) -> Any:
    """A value of `kind` or a sweep of them (a non-empty list)."""
    return Union[kind, Annotated[list[kind], Field(min_length=1)]]  # noqa: UP007 (`kind` is a runtime value)


def _recipe_field(hint: Any) -> tuple[Any, None]:
    """A recipe field of RunConfig's annotation: a scalar may be a sweep; omitted: RunConfig's default."""
    return (_sweep_of(hint) if hint in _SCALARS else hint) | None, None


# The training recipe: RunConfig's fields but those of SPEC_PLACES, each optional (omitted fields keep
# RunConfig's defaults, the study's recipe). Types only: ranges and choices are RunConfig's.
Recipe = create_model(
    "Recipe",
    __base__=_Written,
    **{name: _recipe_field(hint) for name, hint in field_types().items() if name not in SPEC_PLACES},
)
# Scalar recipe fields that a list cannot sweep, and why
UNSWEPT = {
    **dict.fromkeys(NOT_IN_RUN_ID, "it changes how runs execute, not what they compute"),
    "layout": "a study reads its one dataset with one layout",
}


class Evaluation(_Strict):
    """How runs are scored: `best.pt` is chosen on `select_split` (which also ranks sweeps in the report);
    the reported metrics are `report_split`'s, scored with the `checkpoint` named. The RunConfig fields
    default to RunConfig's defaults and are checked by it."""

    protocol: str = RunConfig.protocol
    select_split: str = RunConfig.select_split
    report_split: str = RunConfig.report_split
    checkpoint: Literal[CHECKPOINT_KINDS] = "best"
    num_samples: int = RunConfig.num_samples

    @model_validator(mode="after")
    def _report_elsewhere(self) -> Evaluation:
        if self.select_split == self.report_split and self.checkpoint == "best":
            raise ValueError(
                f"report_split and select_split are both {clip(repr(self.report_split))} with checkpoint "
                "'best': a checkpoint chosen on a split scores too well on it (each run's best-case pick); "
                "report another split, or set checkpoint: last"
            )
        return self


class Configuration(_Strict):
    """One loss configuration: a preset (`loss`) with optional `weights` overrides, or explicit `terms`."""

    loss: str | None = None
    weights: dict[str, _sweep_of(float)] = Field(default_factory=dict)
    terms: dict[str, _sweep_of(float)] | None = None
    recipe: Recipe | None = None  # per-configuration deviations from the study's

    @model_validator(mode="after")
    def _one_source(self) -> Configuration:
        if (self.loss is None) == (self.terms is None):
            raise ValueError("give either 'loss' (a preset name) or 'terms' (term: weight), not both or none")
        if self.terms is not None and self.weights:
            raise ValueError("'weights' overrides a preset's weights; with explicit 'terms' put them there")
        return self


DEFAULT_FAMILY = "against the baseline"  # the one family of a spec that names none


class Question(_Strict):
    """What the study asks (docs/evaluation.md, "The study's question"): one primary metric, and the
    configurations compared with the baseline on it, in named families (each reported in a table of its own).
    Holm's correction runs over these comparisons only; every other metric, and any configuration in no
    family, is exploratory: shown, uncorrected, and marked so. Default: PSNR, every configuration."""

    metric: Literal[METRIC_NAMES] = "psnr"
    families: dict[str, list[str]] | None = None


class StudySpec(_Strict):
    study: str
    description: str = ""
    dataset: str | SyntheticRef
    model: str = RunConfig.model
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    baseline: str | None = None
    recipe: Recipe = Field(default_factory=Recipe)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    configurations: dict[str, Configuration] = Field(min_length=1)
    question: Question = Field(default_factory=Question)
    # a folder dataset (`--local`) whose splits share pairs: refused, the later copies dropped, or kept
    # and flagged in every report (services.datasets.LEAK_POLICIES); an upload chose its dataset's
    leaks: Literal["refuse", "drop", "allow"] = "refuse"

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("must be distinct")
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
    # what the names in `config` meant when the run was planned: {"loss_weights": {term: weight},
    # "model": ModelConfig as a dict, "dataset": content identity}; reports show these, not today's presets
    resolved: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "variant": self.variant,
            "configuration": self.configuration,
            "seed": self.seed,
            "sweep": self.sweep,
            "config": self.config,
            "resolved": self.resolved,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**data)  # a plan recorded before `resolved` existed gets its default, {}


@dataclass(frozen=True)
class Study:
    """A validated spec and its runs."""

    spec: StudySpec
    runs: list[RunPlan]
    # the dataset's content identity the run ids hash (services.studies.prepare_dataset), and what its
    # check found (layout, pair counts, leakage); empty until bound
    dataset_info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def bind_dataset(self, info: dict[str, Any]) -> Study:
        """The same study with run ids that hash the dataset's content (`info["identity"]`)."""
        return Study(self.spec, expand(self.spec, dataset_identity=info["identity"]).runs, info)

    @property
    def name(self) -> str:
        return self.spec.study

    @property
    def baseline(self) -> str:
        """The baseline configuration: the spec's, else the first one listed."""
        return self.spec.baseline or next(iter(self.spec.configurations))

    def families(self) -> dict[str, list[str]]:
        """The question's families of configurations (the spec's, else one of every configuration but the
        baseline), each in the spec's order."""
        if self.spec.question.families is not None:
            return {name: list(members) for name, members in self.spec.question.families.items()}
        return {DEFAULT_FAMILY: [c for c in self.spec.configurations if c != self.baseline]}

    def variant_families(self) -> dict[str, str]:
        """variant -> its family, for every variant of a configuration the question asks about (a sweep's
        points are comparisons of their own); the report corrects these, `plan` counts them."""
        family_of = {c: family for family, members in self.families().items() for c in members}
        return {r.variant: family_of[r.configuration] for r in self.runs if r.configuration in family_of}

    def dataset_ref(self) -> str | SyntheticRef:
        return self.spec.dataset

    def to_dict(self) -> dict[str, Any]:
        """What `studies/<study>/spec.json` holds."""
        spec = self.spec.model_dump(mode="json", exclude_none=True)
        spec["recipe"] = self.spec.recipe.written_order(mode="json", exclude_none=True)
        for name, conf in self.spec.configurations.items():
            if conf.recipe is not None:
                written = conf.recipe.written_order(mode="json", exclude_none=True)
                spec["configurations"][name]["recipe"] = written
        return {
            "spec": spec,
            "baseline": self.baseline,
            "dataset": dataset_name(self.spec.dataset),
            "dataset_info": self.dataset_info,
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Study:
        runs = [RunPlan.from_dict(r) for r in data["runs"]]
        return cls(StudySpec.model_validate(data["spec"]), runs, data.get("dataset_info") or {})


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


@functools.cache
def _defaults() -> dict[str, Any]:
    return RunConfig(dataset="-").to_dict()


def _changed(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run's config that differ from RunConfig's defaults: what its id hashes, so that a
    field added to RunConfig later (at a default that keeps what runs compute) leaves existing ids alone."""
    defaults = _defaults()
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
        clip(str(p))
        for p in loc
        if not (
            isinstance(p, str)
            and (p in _UNION_TAGS or "[" in p or p.startswith(("constrained-", "function-")))
        )
    ]
    return ".".join(keep)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "SyntheticRef"}


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """The "unknown key" message, naming the closest key allowed where it stands (`epoch` -> `epochs`), or
    the spec's own place of a RunConfig field written in a recipe (`recipe.seed` -> `seeds`)."""
    if not loc:
        return "unknown key"
    sections = {"recipe": Recipe, "evaluation": Evaluation, "configurations": Configuration,
                "dataset": SyntheticDataset}  # fmt: skip
    model = StudySpec if len(loc) == 1 else sections.get(str(loc[-2])) or sections.get(str(loc[0]))
    key = str(loc[-1])
    if model is Recipe and key in SPEC_PLACES:
        return f"unknown key: a study sets {key!r} in {SPEC_PLACES[key].format(c='<name>')}"
    return unknown("unknown key", key, model.model_fields if model else field_types(), cutoff=0.75)


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


def _sweep_axes(conf: Configuration, recipe: dict[str, Any]) -> list[tuple[str, str, list]]:
    """(kind, key, values) for each swept field: kind 'weight' (a loss term) or 'recipe' (a scalar field of
    the recipe given a list), in the order the spec writes them: the terms, then the recipe's fields (the
    run names' order)."""
    weights = conf.terms if conf.terms is not None else conf.weights
    axes = [("weight", term, value) for term, value in weights.items() if isinstance(value, list)]
    types = field_types()
    axes += [("recipe", key, value) for key, value in recipe.items()
             if isinstance(value, list) and types[key] in _SCALARS]  # fmt: skip
    return axes


def run_count(spec: StudySpec) -> int:
    """The runs `expand` plans: each configuration's sweep points (the product of its sweep lists'
    lengths) times the seeds, counted without building one, so that a grid is refused or confirmed
    before it is expanded (a configuration `expand` refuses outright still counts)."""
    points = sum(
        math.prod(len(values) for _, _, values in _sweep_axes(conf, _recipe_of(spec, conf)))
        for conf in spec.configurations.values()
    )
    return points * len(spec.seeds)


def _recipe_of(spec: StudySpec, conf: Configuration) -> dict[str, Any]:
    """The configuration's recipe in the order the spec writes it: the study's, with the configuration's
    own fields on top (a field the study wrote keeps the study's place)."""
    recipe = spec.recipe.written_order(exclude_none=True)
    if conf.recipe is not None:
        recipe |= conf.recipe.written_order(exclude_none=True)
    return recipe


def _spec_path(problem: str, cname: str, conf: Configuration) -> str:
    """A RunConfig problem ("field.key: message", RunConfig's names) at the place where the spec's author
    wrote the value: `configurations.X.recipe.lr` or `recipe.lr`, `configurations.X.weights.vgg`, ...;
    the value RunConfig quotes ("..., got VALUE") cut to MAX_QUOTED characters."""
    where, message = problem.split(": ", 1)
    head, got, value = message.partition(", got ")
    message = head + got + clip(value) if got else message
    field, dot, rest = where.partition(".")
    if field == "loss" and conf.terms is not None:
        place = f"configurations.{cname}.terms"
    elif field in SPEC_PLACES:
        place = SPEC_PLACES[field].format(c=cname)
    elif conf.recipe is not None and field in conf.recipe.model_dump(exclude_none=True):
        place = f"configurations.{cname}.recipe.{field}"
    else:
        place = f"recipe.{field}"
    return f"{place}{dot}{rest}: {message}"


def _unswept(cname: str, conf: Configuration, recipe: dict[str, Any]) -> list[str]:
    """A problem for each list given to a scalar field that a list cannot sweep (UNSWEPT)."""
    return [
        _spec_path(f"{key}: a list is a sweep, and {key} cannot be swept: {why}", cname, conf)
        for key, why in UNSWEPT.items()
        if isinstance(recipe.get(key), list)
    ]


def _name_problems(spec: StudySpec) -> list[str]:
    """The names that become object keys, and the baseline."""
    problems = []
    names = [("study", spec.study, "study name")]
    if isinstance(spec.dataset, str) and not is_local_path(spec.dataset):
        names.append(("dataset", spec.dataset, "dataset name"))
    names += [(f"configurations.{c}", c, "configuration name") for c in spec.configurations]
    for path, name, what in names:
        try:
            check_name(name, what)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
    if spec.baseline is not None and spec.baseline not in spec.configurations:
        problems.append(
            f"baseline: {clip(repr(spec.baseline))} is not one of the configurations "
            f"{sorted(clip(c) for c in spec.configurations)}"
        )
    return problems + _question_problems(spec)


def _question_problems(spec: StudySpec) -> list[str]:
    """Each family member must be a configuration other than the baseline, in one family only."""
    baseline = spec.baseline or next(iter(spec.configurations))
    problems, seen = [], {}
    for family, members in (spec.question.families or {}).items():
        where = f"question.families.{family}"
        if not members:
            problems.append(f"{where}: an empty family compares nothing; list configurations or remove it")
        for name in members:
            if name not in spec.configurations:
                what = unknown(f"unknown configuration {name!r}", name, spec.configurations,
                               listing="configurations")  # fmt: skip
                problems.append(f"{where}: {what}")
            elif name == baseline:
                problems.append(f"{where}: {name!r} is the baseline, which every comparison is against")
            elif name in seen:
                problems.append(f"{where}: {name!r} is already in family {seen[name]!r}; a comparison is "
                                "corrected once")  # fmt: skip
            seen.setdefault(name, family)
    return problems


def expand(spec: StudySpec, source: str = "spec", dataset_identity: str | None = None) -> Study:
    """Check every run of the grid (RunConfig's checks, the names, the baseline) and expand it.

    `dataset_identity`: the dataset's content (a manifest hash) that the run ids hash; until a submission
    binds it (Study.bind_dataset), the ids hash the dataset's name.

    Raises:
        SpecError: every problem found, each at the field path the spec's author wrote, each once
            (a bad study-level field is one problem, not one per run); a grid of more than
            MAX_STUDY_RUNS runs before anything is expanded.
    """
    problems = _name_problems(spec)
    count = run_count(spec)
    if count > MAX_STUDY_RUNS:
        too_many = (f"configurations: {count} runs (each configuration's sweep points x {len(spec.seeds)} "
                    f"seed(s)); a study holds at most {MAX_STUDY_RUNS}: sweep fewer values, or split it into "
                    "studies")  # fmt: skip
        raise SpecError(source, [*problems, too_many])
    runs: list[RunPlan] = []
    for cname, conf in spec.configurations.items():
        if any(p.startswith(f"configurations.{cname}:") for p in problems):
            continue  # a name that cannot be a key
        recipe = _recipe_of(spec, conf)
        unswept = _unswept(cname, conf, recipe)
        if unswept:
            problems += unswept
            continue
        axes = _sweep_axes(conf, recipe)
        for point in itertools.product(*(values for _, _, values in axes)):
            weights = dict(conf.terms if conf.terms is not None else conf.weights)
            run_recipe = dict(recipe)
            for (kind, key, _), value in zip(axes, point, strict=True):
                (weights if kind == "weight" else run_recipe)[key] = value
            sweep = {key: value for (_, key, _), value in zip(axes, point, strict=True)}
            variant = cname + "".join(f"+{k}={_fmt(v)}" for k, v in sweep.items())
            for seed in spec.seeds:
                try:
                    run = _plan(
                        spec, conf, cname, variant, sweep, seed, run_recipe, weights, dataset_identity
                    )
                except ConfigError as exc:
                    problems += [_spec_path(p, cname, conf) for p in exc.problems]
                    continue
                if len(run.run_id) > MAX_RUN_ID:
                    problems.append(f"configurations.{cname}: run id {clip(repr(run.run_id))} is longer "
                                    f"than {MAX_RUN_ID} characters")  # fmt: skip
                runs.append(run)
    if problems:
        raise SpecError(source, list(dict.fromkeys(problems)))
    return Study(spec, runs)


def _plan(spec: StudySpec, conf: Configuration, cname: str, variant: str, sweep: dict[str, Any], seed: int,
          recipe: dict[str, Any], weights: dict[str, Any], dataset_identity: str | None,
          ) -> RunPlan:  # fmt: skip
    """One run: its RunConfig (checked: ConfigError) and its id, which hashes what the run computes: the
    resolved loss weights and model config (not preset names, whose meaning code can change), the
    dataset's content, the recipe and the evaluation."""
    cfg = RunConfig.from_dict({
        **recipe,
        "dataset": "<resolved by the worker>",
        "model": spec.model,
        "loss": conf.loss if conf.loss is not None else weights,
        "loss_weights": weights if conf.loss is not None else {},
        "seed": seed,
        **{f: getattr(spec.evaluation, f) for f in _EVALUATION_FIELDS},
    })  # fmt: skip
    config = cfg.to_dict()
    del config["dataset"]
    resolved = {
        "loss_weights": resolved_loss_weights(config),
        "model": resolved_model(config),
        "dataset": dataset_identity or dataset_name(spec.dataset),
    }
    # The evaluation's splits are hashed whatever their value: runs stored before they existed (scored on
    # val) must not be taken for runs that report test.
    evaluated = {"checkpoint": spec.evaluation.checkpoint, "splits": [cfg.select_split, cfg.report_split]}
    named = {k: v for k, v in _changed(config).items() if k not in RESOLVED_FIELDS}
    digest = _digest({**resolved, "config": named, **evaluated})
    return RunPlan(f"{variant}-seed{seed}-{digest[:6]}", variant, cname, seed, sweep, config, resolved)


# RunConfig fields that name what `resolved` spells out: a run id hashes the resolved values instead
RESOLVED_FIELDS = ("loss", "loss_weights", "model", "model_overrides")


def resolved_loss_weights(config: dict[str, Any]) -> dict[str, float]:
    """A run's loss terms and weights: its preset resolved by today's code, its overrides applied."""
    from colormamba.losses import resolve_loss_config

    return dict(resolve_loss_config(config["loss"], config.get("loss_weights")))


def resolved_model(config: dict[str, Any]) -> dict[str, Any]:
    """A run's model configuration: its preset resolved by today's code, its overrides applied."""
    from colormamba.models.registry import resolve_config

    model = resolve_config(config["model"], scan_backend=config.get("scan_backend", "auto"),
                           **config.get("model_overrides", {}))  # fmt: skip
    return dataclasses.asdict(model)


def parse_spec(data: Any, source: str = "spec", check_count: Callable[[int], None] | None = None) -> Study:
    """Validate plain data (a parsed YAML/JSON document) and expand it; raises SpecError listing every
    problem at once: when the structure is wrong somewhere, the rest is still checked (`_without`).

    `check_count`, given a valid spec, is called with its number of runs (`run_count`) before the grid is
    expanded, and raises to stop there (`submit.py --max-runs`: a grid too large to list is not listed)."""
    if not isinstance(data, dict):
        raise SpecError(source, ["(top level): expected a mapping of spec fields"])
    problems: list[str] = []
    written, spec = data, None
    while spec is None:
        try:
            spec = StudySpec.model_validate(data)
        except ValidationError as exc:
            reported = {p.split(": ", 1)[0] for p in problems}  # a value taken out is then "missing"
            problems += [p for p in _pydantic_problems(exc) if p.split(": ", 1)[0] not in reported]
            data = _without(data, [err["loc"] for err in exc.errors()])
            if data is None:  # nothing left to take out (a required field is missing): stop here
                raise SpecError(source, list(dict.fromkeys(problems))) from None
    count = run_count(spec)
    if check_count is not None and not problems and count <= MAX_STUDY_RUNS:
        check_count(count)  # above MAX_STUDY_RUNS, `expand` refuses without a question
    try:
        study = expand(spec, source)
    except SpecError as exc:
        # a baseline that names a configuration taken out above is not a second problem
        named = written.get("baseline") in (written.get("configurations") or {})
        problems += [p for p in exc.problems if not (named and p.startswith("baseline:"))]
    if problems:
        raise SpecError(source, list(dict.fromkeys(problems)))
    return study


def _without(data: dict[str, Any], locs: list[tuple[Any, ...]]) -> dict[str, Any] | None:
    """A copy of `data` without the values at `locs` (the deepest mapping key of each that it has), so
    that their defaults take their place and the rest of the spec can be checked; None if none was there."""
    paths = set()
    for loc in locs:
        path, node = [], data
        for part in loc:
            if not (isinstance(node, dict) and part in node):
                break
            path.append(part)
            node = node[part]
        if path:
            paths.add(tuple(path))
    data = copy.deepcopy(data)
    for path in sorted(paths, key=len):  # a shorter path first: a longer one under it has gone with it
        parent = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return data if paths else None


def load_spec(path: str | Path, dataset: str | None = None,
              check_count: Callable[[int], None] | None = None) -> Study:  # fmt: skip
    """Read and validate a YAML (or JSON) spec file; raises SpecError naming the file. `dataset`, when
    given, replaces the spec's dataset (`submit.py --dataset`: a folder with --local, a stored name).
    `check_count`: parse_spec's."""
    path = Path(path)
    data = _read_document(path)
    if dataset is not None and isinstance(data, dict):
        data = {**data, "dataset": dataset}
    return parse_spec(data, str(path), check_count)


def _read_document(path: Path) -> Any:
    """The one YAML (or JSON, which YAML reads) document of a spec file as plain data, within the MAX_SPEC_
    bounds: the file's size first, then the parser's events (aliases, nesting, values), then the composed
    nodes with every alias counted as the size of what it names (a "billion laughs" is a few hundred
    bytes), all before one Python value is built. Raises SpecError naming the file, the bound and the
    line."""
    source = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(source, [f"(file): cannot read it ({exc.strerror})"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(source, [f"(file): larger than {MAX_SPEC_BYTES} bytes; a spec is a few KB"])
    try:
        _check_events(raw, source)
        loader = yaml.SafeLoader(raw)
        try:
            node = loader.get_single_node()
            if node is None:  # an empty file
                return None
            _measure(node, 0, {}, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SpecError(source, [_yaml_problem(exc)]) from None


def _check_events(raw: bytes, source: str) -> None:
    """The parser's events, read without composing them (composing recurses once per level): at most
    MAX_SPEC_ALIASES aliases, MAX_SPEC_DEPTH levels and MAX_SPEC_VALUES values as written; the parse stops
    at the first bound crossed, so a hostile file costs no more than a real spec's bound."""
    depth = aliases = values = 0
    for event in yaml.parse(raw, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.NodeEvent):
            values += 1
            if values > MAX_SPEC_VALUES:
                raise SpecError(source, [_too_many_values(line)])
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_SPEC_ALIASES:
                raise SpecError(source, [f"(file): more than {MAX_SPEC_ALIASES} YAML aliases (*name), the "
                                         f"first over at line {line}; a spec needs few if any"])  # fmt: skip
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_SPEC_DEPTH:
                raise SpecError(source, [_too_deep(line)])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _measure(node: yaml.Node, outer: int, known: dict[int, tuple[int, int]], source: str) -> tuple[int, int]:
    """(values, levels) of `node` with its aliases expanded (an alias is the node it names, measured once:
    `known`), `outer` the levels around it; raises SpecError past MAX_SPEC_VALUES or MAX_SPEC_DEPTH. A
    value that contains itself (`&a [*a]`) is nested without end: too deep."""
    line = node.start_mark.line + 1
    size = known.get(id(node))
    if size is None:
        if isinstance(node, yaml.ScalarNode):
            size = (1, 0)
        else:
            if outer >= MAX_SPEC_DEPTH:
                raise SpecError(source, [_too_deep(line)])
            pairs = node.value if isinstance(node, yaml.MappingNode) else [(child,) for child in node.value]
            inner = [_measure(child, outer + 1, known, source) for pair in pairs for child in pair]
            size = (1 + sum(v for v, _ in inner), 1 + max((levels for _, levels in inner), default=0))
        known[id(node)] = size
    if outer + size[1] > MAX_SPEC_DEPTH:
        raise SpecError(source, [_too_deep(line)])
    if size[0] > MAX_SPEC_VALUES:
        raise SpecError(source, [_too_many_values(line)])
    return size


def _too_deep(line: int) -> str:
    return (f"(file): nested deeper than {MAX_SPEC_DEPTH} levels (lists and mappings, aliases expanded) at "
            f"line {line}")  # fmt: skip


def _too_many_values(line: int) -> str:
    return (f"(file): more than {MAX_SPEC_VALUES} values (each YAML alias counted as what it names) by line "
            f"{line}; a spec holds a few hundred")  # fmt: skip


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML syntax error as one line: where, and what the parser expected."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc)
    return f"(file): not valid YAML{where}: {what}"
