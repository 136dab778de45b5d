"""Study specs: the shipped specs validate, sweeps expand into named runs, ids are deterministic, and an
invalid spec lists every problem by field path."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml

from colormamba.config import RunConfig
from services.spec import (
    MAX_PROBLEM_CHARS,
    MAX_SPEC_ALIASES,
    MAX_SPEC_BYTES,
    MAX_SPEC_DEPTH,
    MAX_SPEC_VALUES,
    MAX_STUDY_RUNS,
    SpecError,
    Study,
    expand,
    load_spec,
    parse_spec,
    run_count,
)

SPECS = Path(__file__).resolve().parents[2] / "jobs" / "specs"


def demo_data() -> dict:
    return yaml.safe_load((SPECS / "demo.yaml").read_text())


def test_loss_study_spec_is_the_seed_study():
    study = load_spec(SPECS / "loss_study.yaml")
    assert study.name == "loss_study"
    configurations = ["original", "original+vgg", "original+histogram", "vgg", "histogram", "combined"]
    assert sorted({r.configuration for r in study.runs}) == sorted(configurations)
    # three seeds per configuration: run-to-run noise inside the report's intervals
    assert sorted((r.configuration, r.seed) for r in study.runs) == sorted(
        (c, s) for c in configurations for s in (0, 1, 2)
    )
    for run in study.runs:
        assert run.config["model"] == "paper"
        assert run.config["epochs"] == 50
        assert run.config["batch_size"] == 8
        assert run.config["lr"] == pytest.approx(1e-4)
        assert run.config["loss"] == run.configuration
    assert study.spec.dataset == "vcip2020"
    assert study.baseline == "original"


def test_demo_spec_expands_configurations_times_seeds_into_valid_run_configs():
    study = load_spec(SPECS / "demo.yaml")
    assert study.spec.seeds == [0, 1, 2], "three seeds: the report's intervals include seed noise"
    assert len(study.runs) == 2 * 3
    assert {(r.configuration, r.seed) for r in study.runs} == {
        (c, s) for c in ("original", "histogram") for s in (0, 1, 2)
    }
    for run in study.runs:
        cfg = RunConfig.from_dict({**run.config, "dataset": "/somewhere"})
        assert cfg.model == "tiny" and cfg.seed == run.seed
        assert run.run_id.startswith(f"{run.variant}-seed{run.seed}-")


def test_run_ids_are_deterministic_and_change_with_the_configuration():
    a = [r.run_id for r in parse_spec(demo_data()).runs]
    b = [r.run_id for r in parse_spec(demo_data()).runs]
    assert a == b
    assert len(set(a)) == len(a)
    changed = demo_data()
    changed["recipe"]["epochs"] = 3
    c = [r.run_id for r in parse_spec(changed).runs]
    assert set(a).isdisjoint(c), "a run with another recipe must get another id"
    # the description does not change what is computed, so not the ids either
    described = demo_data()
    described["description"] = "other words"
    assert [r.run_id for r in parse_spec(described).runs] == a


def test_sweeps_expand_the_grid_with_readable_names():
    data = demo_data()
    data["seeds"] = [0]
    data["configurations"]["histogram"] = {"loss": "histogram", "weights": {"histogram": [0.5, 2.0]}}
    data["recipe"]["lr"] = [1e-3, 1e-4]
    study = parse_spec(data)
    variants = sorted({r.variant for r in study.runs})
    assert variants == sorted(
        [
            "original+lr=0.001",
            "original+lr=0.0001",
            "histogram+histogram=0.5+lr=0.001",
            "histogram+histogram=0.5+lr=0.0001",
            "histogram+histogram=2+lr=0.001",
            "histogram+histogram=2+lr=0.0001",
        ]
    )
    run = next(r for r in study.runs if r.variant == "histogram+histogram=2+lr=0.0001")
    assert run.sweep == {"histogram": 2.0, "lr": 1e-4}
    assert run.config["loss_weights"] == {"histogram": 2.0}
    assert run.config["lr"] == pytest.approx(1e-4)


def test_explicit_terms_and_per_configuration_recipe():
    data = demo_data()
    data["configurations"] = {
        "mine": {"terms": {"mse": 1.0, "cosine": [0.5, 1.0]}, "recipe": {"epochs": 3}},
        "original": {"loss": "original"},
    }
    study = parse_spec(data)
    mine = [r for r in study.runs if r.configuration == "mine"]
    assert {r.config["loss"]["cosine"] for r in mine} == {0.5, 1.0}
    assert all(r.config["epochs"] == 3 for r in mine)
    epochs = data["recipe"]["epochs"]
    assert epochs != 3
    assert all(r.config["epochs"] == epochs for r in study.runs if r.configuration == "original")
    assert study.baseline == "original"


def test_invalid_spec_lists_every_problem_with_its_path():
    data = demo_data()
    data["bogus"] = 1
    data["recipe"]["epochs"] = 0
    data["recipe"]["lr"] = "fast"
    data["seeds"] = [0, 0]
    data["evaluation"]["protocol"] = "psnr-only"
    data["configurations"]["typo"] = {"loss": "orignal"}
    data["configurations"]["bad_term"] = {"terms": {"mse": 1.0, "lpips": 1.0}}
    data["baseline"] = "nothing"
    with pytest.raises(SpecError) as info:
        parse_spec(data, "demo.yaml")
    problems = info.value.problems
    text = str(info.value)
    assert text.startswith("demo.yaml:")
    for path in (
        "bogus:",
        "recipe.epochs:",
        "recipe.lr:",
        "seeds:",
        "evaluation.protocol:",
        "configurations.typo.loss:",
        "configurations.bad_term.terms.lpips:",
        "baseline:",
    ):
        assert any(p.startswith(path) for p in problems), (path, problems)
    assert any("unknown key" in p for p in problems)
    assert "configurations.typo.loss: unknown preset 'orignal'; did you mean 'original'?" in problems
    assert len(problems) == 8, problems  # each once, though the recipe's problems hold for every run


def test_names_that_become_keys_are_checked():
    data = demo_data()
    data["study"] = "../etc"
    data["configurations"] = {"a/b": {"loss": "original"}}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert any(p.startswith("study:") for p in info.value.problems)
    assert any(p.startswith("configurations.a/b:") for p in info.value.problems)


def test_unreadable_and_non_yaml_files_name_the_file(tmp_path):
    with pytest.raises(SpecError, match=r"missing\.yaml"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(SpecError, match=r"(?s)bad.yaml.*not valid YAML"):
        load_spec(bad)


def test_study_round_trips_through_its_stored_form():
    from services.spec import Study

    study = load_spec(SPECS / "demo.yaml")
    again = Study.from_dict(study.to_dict())
    assert [r.to_dict() for r in again.runs] == [r.to_dict() for r in study.runs]
    assert again.baseline == study.baseline


def test_synthetic_dataset_name_is_a_function_of_its_parameters():
    study = load_spec(SPECS / "demo.yaml")
    name = study.to_dict()["dataset"]
    assert name.startswith("synthetic-")
    data = demo_data()
    data["dataset"]["synthetic"]["size"] = 48
    assert parse_spec(data).to_dict()["dataset"] != name


def test_sweep_of_an_empty_list_is_refused():
    data = demo_data()
    data["recipe"]["lr"] = []
    with pytest.raises(SpecError) as info:
        parse_spec(copy.deepcopy(data))
    assert any(p.startswith("recipe.lr") for p in info.value.problems)


def test_fast_path_fields_pass_through_and_change_run_ids():
    default_ids = [r.run_id for r in parse_spec(demo_data()).runs]
    explicit = demo_data()
    explicit["recipe"] |= {"precision": "fp32", "channels_last": False, "compile": False}
    assert [r.run_id for r in parse_spec(explicit).runs] == default_ids  # ids hash the resolved config
    execution = demo_data()
    execution["recipe"] |= {"checkpoint_interval_s": 600, "cancel_check_every": 20}
    study = parse_spec(execution)
    assert [r.run_id for r in study.runs] == default_ids  # how a run executes is not what it computes
    assert all(r.config["checkpoint_interval_s"] == 600 for r in study.runs)

    fast = demo_data()
    fast["recipe"] |= {"precision": "bf16", "channels_last": True, "compile": True}
    study = parse_spec(fast)
    fields = ("precision", "channels_last", "compile")
    assert all(tuple(r.config[f] for f in fields) == ("bf16", True, True) for r in study.runs)
    assert set(default_ids).isdisjoint(r.run_id for r in study.runs)

    bad = demo_data()
    bad["recipe"]["precision"] = "fp16"
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    assert any(p.startswith("recipe.precision") for p in info.value.problems)


def test_generator_steps_per_batch_is_a_sweepable_recipe_field():
    default = parse_spec(demo_data())
    assert all(r.config["generator_steps_per_batch"] == 2 for r in default.runs)  # the reference's
    data = demo_data()
    data["seeds"] = [0]
    data["recipe"]["generator_steps_per_batch"] = [1, 2]
    study = parse_spec(data)
    by_variant = {r.variant: r.config["generator_steps_per_batch"] for r in study.runs}
    assert by_variant["original+generator_steps_per_batch=1"] == 1
    assert by_variant["original+generator_steps_per_batch=2"] == 2
    one = next(r for r in study.runs if r.config["generator_steps_per_batch"] == 1)
    assert one.run_id not in {r.run_id for r in default.runs}
    data["recipe"]["generator_steps_per_batch"] = 0
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert any(p.startswith("recipe.generator_steps_per_batch") for p in info.value.problems)


# -- one configuration schema: the recipe is RunConfig's, its checks are RunConfig's ----------------------


def _problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "spec.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"recipe": {"augment": {"flipp": True}}},
            "recipe.augment.flipp: unknown key; did you mean 'hflip_p'?",
        ),
        (
            {"recipe": {"model_overrides": {"rgb_widht": 8}}},
            "recipe.model_overrides.rgb_widht: unknown key; did you mean 'rgb_width'?",
        ),
        (
            {"configurations": {"histogram": {"loss": "histogram", "weights": {"vggg": 1.0}}}},
            "configurations.histogram.weights.vggg: unknown loss term; did you mean 'vgg'?",
        ),
        (
            {"configurations": {"mine": {"terms": {"mse": 1.0, "cosin": 0.5}}}},
            "configurations.mine.terms.cosin: unknown loss term; did you mean 'cosine'?",
        ),
        (
            {"configurations": {"original": {"loss": "original", "recipe": {"lr": -1}}}},
            "configurations.original.recipe.lr: must be > 0, got -1.0",
        ),
        ({"model": "tinny"}, "model: unknown preset 'tinny'; did you mean 'tiny'?"),
        ({"recipe": {"scan_backend": "cuda"}}, "recipe.scan_backend: must be one of "),
        ({"recipe": {"seed": 3}}, "recipe.seed: unknown key: a study sets 'seed' in seeds"),
        ({"evaluation": {"num_samples": 100}}, "evaluation.num_samples: must be in [0, 64], got 100"),
    ],
)
def test_a_value_a_run_would_refuse_is_refused_at_parse_where_the_user_wrote_it(change, problem):
    data = demo_data()
    for key, value in change.items():
        data[key] = value
    problems = _problems(data)
    assert any(p.startswith(problem) for p in problems), problems


def test_the_scan_backend_set_through_model_overrides_is_a_clash_naming_its_place():
    data = demo_data()
    data["recipe"]["model_overrides"] = {"scan_backend": "torch"}
    (problem,) = _problems(data)
    assert problem.startswith("recipe.model_overrides.scan_backend: ")
    assert "`scan_backend` field" in problem


def test_the_scan_backends_accepted_are_the_ops_registry_s():
    from colormamba.ops import backend_names

    for name in backend_names():  # every registered one, "auto" included, whether it runs here or not
        data = demo_data()
        data["recipe"]["scan_backend"] = name
        assert {r.config["scan_backend"] for r in parse_spec(data).runs} == {name}


def test_the_resolved_model_config_s_own_rules_are_checked_at_parse():
    data = demo_data()
    data["recipe"]["model_overrides"] = {"rgb_width": 4}  # narrower than the criss-cross reduction (8)
    (problem,) = _problems(data)
    assert problem.startswith("recipe.model_overrides: ") and "cca_reduction" in problem


def test_a_recipe_field_that_the_old_hand_list_left_out_sweeps():
    data = demo_data()
    data["seeds"] = [0]
    data["recipe"]["lr_gamma"] = [0.5, 0.9]
    recipe = {"vgg_weights": ["pretrained", "random"]}
    data["configurations"] = {"original": {"loss": "original", "recipe": recipe}}
    study = parse_spec(data)
    got = {r.variant: (r.config["lr_gamma"], r.config["vgg_weights"]) for r in study.runs}
    assert got == {  # the study's recipe first, as the spec writes it
        "original+lr_gamma=0.5+vgg_weights=pretrained": (0.5, "pretrained"),
        "original+lr_gamma=0.5+vgg_weights=random": (0.5, "random"),
        "original+lr_gamma=0.9+vgg_weights=pretrained": (0.9, "pretrained"),
        "original+lr_gamma=0.9+vgg_weights=random": (0.9, "random"),
    }
    assert len({r.run_id for r in study.runs}) == 4


@pytest.mark.parametrize("order", [("lr", "epochs"), ("epochs", "lr")])
def test_sweep_axes_follow_the_order_the_spec_writes_them(order, tmp_path):
    data = demo_data()
    data["seeds"] = [0]
    sweeps = {"lr": [0.001, 0.002], "epochs": [1, 2]}
    data["recipe"] = {key: sweeps[key] for key in order} | {"batch_size": 4}
    data["configurations"] = {"original": {"loss": "original"}}
    study = parse_spec(data)
    first, second = order
    assert study.runs[0].variant == f"original+{first}={sweeps[first][0]:g}+{second}={sweeps[second][0]:g}"
    # the order survives the study's record: a reloaded spec expands to the same runs
    again = Study.from_dict(json.loads(json.dumps(study.to_dict())))
    assert [r.run_id for r in expand(again.spec).runs] == [r.run_id for r in study.runs]
    # and the ids hash what runs compute, not the order: the same runs under either order
    swapped = parse_spec(demo_data() | {"seeds": [0], "configurations": data["configurations"],
                                        "recipe": dict(reversed(data["recipe"].items()))})  # fmt: skip
    digests = {r.run_id.rsplit("-", 1)[1] for r in study.runs}
    assert {r.run_id.rsplit("-", 1)[1] for r in swapped.runs} == digests


def test_a_list_for_a_field_that_cannot_sweep_is_refused():
    data = demo_data()
    data["recipe"]["checkpoint_interval_s"] = [0, 60]  # not in run ids: two runs would compute the same
    (problem,) = _problems(data)
    assert problem.startswith("recipe.checkpoint_interval_s: a list is a sweep, and checkpoint_interval_s")
    assert "how runs execute" in problem
    data = demo_data()
    data["recipe"]["betas"] = [0.5, 0.999, 0.9]  # a pair, not a sweep
    assert any(p.startswith("recipe.betas") for p in _problems(data))


def test_a_problem_of_the_study_recipe_is_reported_once_not_per_run():
    data = demo_data()  # two configurations x two seeds
    data["recipe"]["lr"] = -1
    data["recipe"]["augment"] = {"flipp": True}
    assert _problems(data) == [
        "recipe.lr: must be > 0, got -1.0",
        "recipe.augment.flipp: unknown key; did you mean 'hflip_p'?",
    ]


def test_a_configuration_s_own_recipe_value_is_reported_there_and_the_study_s_elsewhere():
    data = demo_data()
    data["recipe"]["lr"] = -1
    data["configurations"]["histogram"]["recipe"] = {"lr": [1e-3, 0.0]}
    assert sorted(_problems(data)) == [
        "configurations.histogram.recipe.lr: must be > 0, got 0.0",
        "recipe.lr: must be > 0, got -1.0",
    ]



def test_the_question_defaults_to_psnr_of_every_configuration_and_lists_its_problems():
    study = parse_spec(demo_data())
    assert study.spec.question.metric == "psnr"
    assert study.families() == {"against the baseline": ["histogram"]}
    data = demo_data()
    data["configurations"]["vgg"] = {"loss": "vgg"}
    data["question"] = {"metric": "ssim", "families": {"a": ["histogram"], "b": ["vgg"]}}
    asked = parse_spec(data)
    assert asked.spec.question.metric == "ssim" and asked.families() == {"a": ["histogram"], "b": ["vgg"]}
    assert Study.from_dict(json.loads(json.dumps(asked.to_dict()))).families() == asked.families()
    data["configurations"]["vgg"] = {"loss": "vgg", "weights": {"vgg": [1.0, 2.0]}}  # two comparisons
    swept = parse_spec(data)
    assert swept.variant_families() == {"histogram": "a", "vgg+vgg=1": "b", "vgg+vgg=2": "b"}
    data["question"] = {"metric": "psnrr", "families": {"a": ["histogran", "original"], "b": ["vgg", "vgg"],
                                                       "c": []}}  # fmt: skip
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    text = "\n".join(exc.value.problems)
    assert "question.metric" in text
    assert "question.families.a: unknown configuration 'histogran'; did you mean 'histogram'?" in text
    assert "question.families.a: 'original' is the baseline" in text
    assert "question.families.b: 'vgg' is already in family 'b'" in text
    assert "question.families.c: an empty family" in text


# -- hostile documents: bounded before any value is built, never echoed longer than a line ----------------


def laughs(levels: int) -> str:
    """A YAML flow value of 10**levels ones in `levels` lists, each level ten aliases of the one below,
    every anchor defined inside the value itself (so it can stand in an accepted field)."""
    value = "[" + ", ".join(["1"] * 10) + "]"
    for level in range(1, levels):
        value = f"[&l{level} {value}" + f", *l{level}" * 9 + "]"
    return value


def with_overrides(tmp_path: Path, value: str, name: str = "spec.yaml") -> Path:
    """The demo spec with `recipe.model_overrides: {d_state: VALUE}`, VALUE written as given."""
    text = (SPECS / "demo.yaml").read_text()
    overrides = f"  model_overrides: {{d_state: {value}}}\n"
    text = text.replace("  augment: {enabled: false}\n", "  augment: {enabled: false}\n" + overrides)
    assert value in text
    path = tmp_path / name
    path.write_text(text)
    return path


def _refusal(path: Path, seconds: float = 10.0) -> SpecError:
    """The spec's refusal, made in well under `seconds` (generous for a busy machine: what these documents
    cost unbounded is minutes and gigabytes, or a RecursionError)."""
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert time.monotonic() - start < seconds, "refused before anything was built"
    return info.value


def test_a_billion_laughs_in_an_accepted_field_is_refused_at_once_with_a_short_message(tmp_path):
    path = with_overrides(tmp_path, laughs(9))
    line = path.read_text().splitlines().index(f"  model_overrides: {{d_state: {laughs(9)}}}") + 1
    error = _refusal(path)
    assert len(str(error)) < 400, str(error)[:1000]
    assert str(path) in str(error)
    assert f"more than {MAX_SPEC_VALUES} values" in str(error) and f"line {line}" in str(error), str(error)


@pytest.mark.parametrize("levels", [3, 6])
def test_an_aliased_value_never_gives_a_message_longer_than_a_few_hundred_characters(tmp_path, levels):
    error = _refusal(with_overrides(tmp_path, laughs(levels)))
    assert len(str(error)) < 600, str(error)[:1000]
    assert any(p.startswith("recipe.model_overrides") or "values" in p for p in error.problems)
    assert all("\n" not in p and len(p) <= MAX_PROBLEM_CHARS for p in error.problems)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["recipe"].update(model_overrides={"d_state": "x" * 50_000}),
        lambda d: d["configurations"].update({"c" * 50_000: {"loss": "original"}}),
        lambda d: d.update(baseline="b" * 50_000),
        lambda d: d["evaluation"].update(select_split="s" * 50_000, report_split="s" * 50_000),
        lambda d: d["configurations"].update({"c\n" * 20_000: {"loss": "original"}}),
    ],
)
def test_a_long_value_is_quoted_in_one_short_line(change):
    data = demo_data()
    change(data)
    with pytest.raises(SpecError) as info:
        parse_spec(data, "spec.yaml")
    assert info.value.problems
    problems = info.value.problems
    assert all("\n" not in p and len(p) <= MAX_PROBLEM_CHARS for p in problems), problems
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("depth", [MAX_SPEC_DEPTH + 1, 5_000])
def test_a_document_nested_too_deep_is_refused_naming_the_limit(tmp_path, suffix, depth):
    data = demo_data()
    data["recipe"]["model_overrides"] = {"d_state": "DEEP"}
    text = json.dumps(data).replace('"DEEP"', "[" * depth + "]" * depth)
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    error = _refusal(path)
    assert f"nested deeper than {MAX_SPEC_DEPTH} levels" in str(error) and len(str(error)) < 400, str(error)


def test_too_many_aliases_are_refused_naming_the_line_of_the_first_one_over(tmp_path):
    aliases = "\n".join(f"      - *lr  # {i}" for i in range(MAX_SPEC_ALIASES + 1))
    text = (SPECS / "demo.yaml").read_text()
    text = text.replace("  lr: 3.0e-3\n", f"  lr: &lr 3.0e-3\n  epochs:\n{aliases}\n")
    text = text.replace("  epochs: 7\n", "")
    path = tmp_path / "aliases.yaml"
    path.write_text(text)
    line = text.splitlines().index(f"      - *lr  # {MAX_SPEC_ALIASES}") + 1
    error = _refusal(path)
    assert f"more than {MAX_SPEC_ALIASES} YAML aliases" in str(error), str(error)
    assert f"line {line};" in str(error), str(error)


def test_an_oversized_file_is_refused_naming_the_limit(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text((SPECS / "demo.yaml").read_text() + "#" * MAX_SPEC_BYTES + "\n")
    error = _refusal(path)
    assert str(path) in str(error) and f"larger than {MAX_SPEC_BYTES} bytes" in str(error), str(error)


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads_within_the_bounds(path):
    assert load_spec(path).runs


# -- the grid counted before it is expanded ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda d: None,
        lambda d: d.update(seeds=[0, 1, 2, 3, 4]),
        lambda d: d["recipe"].update(lr=[1e-3, 1e-4], epochs=[1, 2, 3]),
        lambda d: d["configurations"].update(histogram={
            "loss": "histogram", "weights": {"histogram": [0.5, 1.0]}, "recipe": {"batch_size": [2, 4, 8]},
        }),
        lambda d: d.update(seeds=[7], configurations={
            **d["configurations"], "custom": {"terms": {"mse": [1.0, 2.0], "cosine": [0.1, 0.2, 0.3]}},
        }),
    ],
)
def test_the_run_count_is_the_expansion_s_length(change):
    data = demo_data()
    change(data)
    study = parse_spec(data)
    assert run_count(study.spec) == len(study.runs)


def _grid_of(runs_per_configuration: int) -> dict:
    """The demo with one configuration and a grid of that many runs (100 seeds x lr x epochs)."""
    data = demo_data()
    data["configurations"] = {"original": {"loss": "original"}}
    data["seeds"] = list(range(100))
    rest = runs_per_configuration // 100
    data["recipe"]["lr"] = [1e-4 * (i + 1) for i in range(min(rest, 1000))]
    data["recipe"]["epochs"] = list(range(1, rest // min(rest, 1000) + 1))
    return data


def test_a_grid_above_the_cap_is_refused_before_it_is_expanded():
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        parse_spec(_grid_of(10**8), "grid.yaml")
    assert time.monotonic() - start < 10  # expanded: hours
    [problem] = info.value.problems
    assert problem.startswith("configurations: 100000000 runs") and f"at most {MAX_STUDY_RUNS}" in problem


def test_the_count_is_given_before_the_grid_is_expanded_and_can_stop_it():
    seen = []

    def stop(count: int) -> None:
        seen.append(count)
        raise RuntimeError("stop")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        parse_spec(_grid_of(5_000), "grid.yaml", check_count=stop)
    assert seen == [5_000] and time.monotonic() - start < 5  # expanding 5,000 runs: ~10 s (~2 ms a run)
    assert parse_spec(demo_data(), check_count=seen.append).runs and seen[-1] == 6
