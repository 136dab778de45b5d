import pytest

from colormamba.config import ConfigError, RunConfig


def test_defaults_are_the_study_recipe() -> None:
    cfg = RunConfig(dataset="d")
    # docs/evaluation.md: 50 epochs, batch 8, Adam 1e-4 with betas 0.5/0.999, lr halved every 25 epochs
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.betas) == (50, 8, 1e-4, (0.5, 0.999))
    assert (cfg.lr_step_epochs, cfg.lr_gamma, cfg.protocol) == (25, 0.5, "colormamba")
    assert cfg.generator_steps_per_batch == 2  # the reference's fit.py: two generator updates per batch


def test_round_trip_through_plain_data() -> None:
    cfg = RunConfig(dataset="d", model="tiny", loss={"mse": 2.0}, betas=(0.9, 0.99), seed=3)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_unknown_keys_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="epoch_count"):
        RunConfig.from_dict({"dataset": "d", "epoch_count": 3})


def test_every_bad_field_is_listed_at_once() -> None:
    with pytest.raises(ValueError) as err:
        RunConfig(dataset="", epochs=0, lr=-1.0, protocol="nope", device="tpu", generator_steps_per_batch=0)
    message = str(err.value)
    for field in ("dataset", "epochs", "lr", "protocol", "device", "generator_steps_per_batch"):
        assert f"{field}:" in message


def test_augment_overrides_are_checked_when_the_config_is_made() -> None:
    assert RunConfig(dataset="d", augment={"nir_contrast": True}).augment == {"nir_contrast": True}
    with pytest.raises(ConfigError) as err:
        RunConfig(dataset="d", augment={"nir_contrat": True})  # a typo must not train the default
    assert err.value.problems == ["augment.nir_contrat: unknown key; did you mean 'nir_contrast'?"]
    with pytest.raises(ConfigError) as err:
        RunConfig(dataset="d", augment={"contrast_p": 2.0, "contrast_range": "wide"})
    assert err.value.problems == [
        "augment.contrast_p: must be in [0, 1], got 2.0",
        "augment.contrast_range: must be [low, high] with 0 <= low <= high, got 'wide'",
    ]


def test_device_resolution() -> None:
    import torch

    from colormamba.config import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_fast_path_fields_default_to_the_reference_step_and_are_validated() -> None:
    cfg = RunConfig(dataset="d")
    assert (cfg.precision, cfg.channels_last, cfg.compile) == ("fp32", False, False)
    fast = RunConfig(dataset="d", precision="bf16", channels_last=True, compile=True)
    assert RunConfig.from_dict(fast.to_dict()) == fast
    with pytest.raises(ValueError, match="precision: must be one of") as err:
        RunConfig(dataset="d", precision="fp16", channels_last="yes", compile=1)  # type: ignore[arg-type]
    assert "channels_last:" in str(err.value) and "compile:" in str(err.value)


def test_a_value_of_the_wrong_type_is_a_problem_naming_it_never_a_crash() -> None:
    with pytest.raises(ConfigError) as err:  # the first three crashed a comparison before
        RunConfig(dataset="d", lr_gamma="half", grad_clip=None, betas="ab",
                  checkpoint_interval_s=float("inf"))  # fmt: skip
    assert err.value.problems == [
        "betas: must be a list of 2 numbers, got 'ab'",
        "lr_gamma: must be a finite number, got 'half'",
        "grad_clip: must be a finite number, got None",
        "checkpoint_interval_s: must be a finite number, got inf",
    ]


def test_what_the_worker_builds_is_checked_by_the_modules_that_own_it() -> None:
    from colormamba.metrics import PROTOCOLS

    for protocol in PROTOCOLS:
        assert RunConfig(dataset="d", protocol=protocol).protocol == protocol
    with pytest.raises(ConfigError) as err:
        RunConfig(dataset="d", model="tiny", loss="histogram", loss_weights={"vggg": 1.0},
                  model_overrides={"rgb_widht": 8, "scan_backend": "torch"})  # fmt: skip
    assert err.value.problems[0] == "loss_weights.vggg: unknown loss term; did you mean 'vgg'?"
    assert err.value.problems[1] == "model_overrides.rgb_widht: unknown key; did you mean 'rgb_width'?"
    assert err.value.problems[2].startswith("model_overrides.scan_backend: ")
    with pytest.raises(ConfigError, match=r"model_overrides: .*cca_reduction"):
        RunConfig(dataset="d", model="tiny", model_overrides={"rgb_width": 4})  # ModelConfig's own rule


def test_an_unknown_key_gets_the_closest_field() -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"dataset": "d", "lr_gama": 0.5})
    assert err.value.problems == ["lr_gama: unknown key; did you mean 'lr_gamma'?"]
