import pytest
import yaml

from gandist.config import Config, ConfigError, config_from_yaml_text, configs_dir, dump_config, load_config


def test_defaults_and_override_types():
    cfg = load_config(None, ["train.steps=123", "optim.lr_g=1e-3", "loss.name=hinge", "data.mirror=true"])
    assert cfg.train.steps == 123 and isinstance(cfg.train.steps, int)
    assert cfg.optim.lr_g == pytest.approx(1e-3)
    assert cfg.loss.name == "hinge" and cfg.data.mirror is True


def test_int_widens_to_float_but_not_the_reverse():
    assert load_config(None, ["optim.lr_g=1"]).optim.lr_g == 1.0
    with pytest.raises(ConfigError, match=r"train.steps.*expected int.*float"):
        load_config(None, ["train.steps=1.5"])


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stpes'.*did you mean 'steps'"):
        load_config(None, ["train.stpes=10"])
    with pytest.raises(ConfigError, match=r"unknown config key 'optm'.*did you mean 'optim'"):
        load_config(None, ["optm.lr_g=1"])


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: dcgan, z_dimm: 3}\n")
    with pytest.raises(ConfigError, match=r"model.z_dimm.*did you mean 'z_dim'"):
        load_config(p)


def test_wrong_type_names_expected_type():
    with pytest.raises(ConfigError, match=r"data.batch_size.*expected int.*str"):
        load_config(None, ["data.batch_size=lots"])
    with pytest.raises(ConfigError, match=r"data.mirror.*expected bool"):
        load_config(None, ["data.mirror=1"])


def test_section_and_value_confusion():
    with pytest.raises(ConfigError, match="is a section"):
        load_config(None, ["train=3"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ["train.steps.x=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.steps"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.name=stylegan9", r"model.name='stylegan9' is not known.*valid: dcgan, mlp"),
        ("loss.name=wgan_gp", r"did you mean 'wgan-gp'"),
        ("data.name=cifar", r"data.name='cifar'.*valid: digits, folder, grid, procedural, ring"),
        ("data.batch_size=0", r"data.batch_size=0 must be positive"),
        ("data.resolution=20", r"data.resolution=20.*digits are served at"),
        ("train.ema_beta=1.0", r"ema_beta"),
        ("model.latent=mix", r"model.latent='mix'.*did you mean 'mixture'.*valid: normal, mixture"),
        ("model.latent=mixture model.latent_components=1", r"latent_components=1 must be at least 2"),
        ("model.latent=mixture model.z_dim=1", r"z\[:, 0\] to pick the component.*z_dim must be >= 2"),
    ],
)
def test_impossible_configs_fail_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, override.split())
    assert "\n" not in str(info.value)


def test_dcgan_resolution_and_gp_batchnorm_rules():
    with pytest.raises(ConfigError, match=r"data.resolution=24 is not supported by model.name=dcgan"):
        load_config(None, ["data.name=procedural", "data.resolution=24"])
    with pytest.raises(ConfigError, match=r"wgan-gp.*d_norm=layer"):
        load_config(None, ["loss.name=wgan-gp", "model.d_norm=batch"])
    with pytest.raises(ConfigError, match="needs image data"):
        load_config(None, ["data.name=ring"])


def test_missing_config_file_lists_shipped():
    with pytest.raises(ConfigError, match=r"not found.*quickstart"):
        load_config("no_such_config")


def test_dump_roundtrip_is_identity():
    cfg = load_config("ring_wgangp", ["train.seed=7"])
    again = config_from_yaml_text(dump_config(cfg))
    assert again == cfg and isinstance(again, Config)


def test_every_shipped_config_loads():
    names = sorted(p.stem for p in configs_dir().glob("*.yaml"))
    required = {
        "quickstart",
        "ring_gan",
        "ring_wgangp",
        "grid_gan",
        "grid_wgangp",
        "digits_dcgan",
        "digits_lsgan",
        "digits_wgan",
        "digits_wgangp",
        "mlp_gan_digits",
    }
    assert required <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == yaml.safe_load((configs_dir() / f"{name}.yaml").read_text())["name"]


def test_paper_hyperparameters_in_shipped_configs():
    wgan = load_config("digits_wgan")
    assert (wgan.loss.name, wgan.loss.clip, wgan.optim.name, wgan.optim.lr_d, wgan.train.d_steps) == (
        "wgan",
        0.01,
        "rmsprop",
        5e-5,
        5,
    )
    gp = load_config("digits_wgangp")
    assert (gp.loss.gp_weight, gp.optim.lr_d, gp.optim.beta1, gp.optim.beta2, gp.train.d_steps) == (
        10.0,
        1e-4,
        0.0,
        0.9,
        5,
    )
    assert gp.model.d_norm != "batch"
    ls = load_config("digits_lsgan")
    assert (ls.loss.lsgan_a, ls.loss.lsgan_b, ls.loss.lsgan_c) == (0.0, 1.0, 1.0)
