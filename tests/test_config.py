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
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stpes'.*did you mean 'train.steps'"):
        load_config(None, ["train.stpes=10"])
    with pytest.raises(
        ConfigError, match=r"unknown config key 'optm.lr_g' \(no section 'optm'\); did you mean 'optim.lr_g'"
    ):
        load_config(None, ["optm.lr_g=1"])


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: dcgan, z_dimm: 3}\n")
    with pytest.raises(ConfigError, match=r"model.z_dimm.*did you mean 'model.z_dim'"):
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
        ("model.name=stylegan9", r"model.name='stylegan9' is not known.*valid: cyclegan, dcgan, mlp"),
        ("loss.name=wgan_gp", r"did you mean 'wgan-gp'"),
        ("data.name=cifar", r"data.name='cifar'.*valid: digits, folder, grid, mnist, procedural, ring"),
        ("data.batch_size=0", r"data.batch_size=0 must be positive"),
        ("data.resolution=20", r"data.resolution=20.*digits are served at"),
        ("train.ema_beta=1.0", r"ema_beta"),
        ("model.latent=mix", r"model.latent='mix'.*did you mean 'mixture'.*valid: normal, mixture"),
        ("model.latent=mixture model.latent_components=1", r"latent_components=1 must be >= 2"),
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


def test_keys_of_another_family_name_their_owner():
    with pytest.raises(
        ConfigError, match=r"'model.g_layers' for model.name=dcgan \(it belongs to model.name=mlp, sgan\)"
    ):
        load_config(None, ["model.g_layers=3"])
    assert load_config(None, ["model.name=mlp", "model.g_layers=3", "data.name=ring"]).model.g_layers == 3
    with pytest.raises(
        ConfigError, match=r"'data.size' for data.name=digits \(it belongs to data.name=procedural\)"
    ):
        load_config(None, ["data.size=3"])


# Every number a user can set has a range; out of it, one line names the key and the range.
RANGES = [
    ("optim.lr_g=-1", "optim.lr_g=-1.0 must be positive"),
    ("optim.lr_d=0", "optim.lr_d=0.0 must be positive"),
    ("optim.beta1=1", r"optim.beta1=1.0 must be in \[0, 1\)"),
    ("optim.beta2=-0.1", r"optim.beta2=-0.1 must be in \[0, 1\)"),
    ("optim.eps=0", "optim.eps=0.0 must be positive"),
    ("optim.momentum=1.5", r"optim.momentum=1.5 must be in \[0, 1\)"),
    ("optim.lr_g=.nan", "optim.lr_g=nan must be a finite number"),
    ("data.batch_size=-3", "data.batch_size=-3 must be positive"),
    ("train.steps=0", "train.steps=0 must be positive"),
    ("train.d_steps=0", "train.d_steps=0 must be positive"),
    ("train.log_every=0", "train.log_every=0 must be positive"),
    ("train.ckpt_every=-1", "train.ckpt_every=-1 must be positive"),
    ("train.sample_every=0", "train.sample_every=0 must be positive"),
    ("train.keep_ckpts=-1", "train.keep_ckpts=-1 must be >= 0"),
    ("train.micro_batch=5", "data.batch_size=64 must be divisible by train.micro_batch=5"),
    ("train.ema_kimg=-1", "train.ema_kimg=-1.0 must be >= 0"),
    ("loss.reg_interval=0", "loss.reg_interval=0 must be positive"),
    ("loss.gp_weight=-1", "loss.gp_weight=-1.0 must be >= 0"),
    ("loss.clip=0", "loss.clip=0.0 must be positive"),
    ("loss.r1_gamma=-2", "loss.r1_gamma=-2.0 must be >= 0"),
    ("model.z_dim=0", "model.z_dim=0 must be positive"),
    ("model.minibatch_std=1", "model.minibatch_std=1 must be 0"),
    ("health.every=0", "health.every=0 must be positive"),
    ("health.saturated_accuracy=1.5", r"health.saturated_accuracy=1.5 must be in \(0, 1\]"),
    ("metrics.n=1", "metrics.n=1 must be >= 2"),
    ("metrics.every=-1", "metrics.every=-1 must be >= 0"),
]


@pytest.mark.parametrize("override, message", RANGES)
def test_out_of_range_values_fail_at_load(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_invalid_yaml_names_file_line_and_column(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nmodel: {name: dcgan, z_dim: 3\ntrain: {steps: 5}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML: line 3, column 6: .*") as info:
        load_config(p)
    assert "\n" not in str(info.value) and "^" not in str(info.value)
    with pytest.raises(ConfigError, match=r"override 'train.steps=\[1': value is not valid YAML \(line 1"):
        load_config(None, ["train.steps=[1"])


def test_missing_config_file_lists_shipped():
    with pytest.raises(ConfigError, match=r"not found.*quickstart"):
        load_config("no_such_config")


def test_dump_roundtrip_is_identity():
    cfg = load_config("ring_wgangp", ["train.seed=7"])
    again = config_from_yaml_text(dump_config(cfg))
    assert again == cfg and isinstance(again, Config)


def test_every_shipped_config_loads(tmp_path):
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
    assert required <= set(names) and {"pggan_cpu", "pggan_256", "pggan_1024"} <= set(names)
    for name in names:
        tree = yaml.safe_load((configs_dir() / f"{name}.yaml").read_text())
        if (
            tree.get("data", {}).get("name") == "folder"
        ):  # configs for a prepared folder name it on the command line
            with pytest.raises(ConfigError, match="data.name=folder needs data.path"):
                load_config(name)
            cfg = load_config(name, [f"data.path={tmp_path}"])
        else:
            cfg = load_config(name)
        assert cfg.name == tree["name"]


def test_pggan_configs_follow_the_paper():
    cfg = load_config("pggan_1024", ["data.path=."])
    s = cfg.schedule
    assert (s.kind, s.start_resolution, s.stable_kimg, s.fade_kimg) == ("progressive", 4, 800, 800)
    assert s.batch == {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 14, 512: 6, 1024: 3}
    assert (cfg.loss.name, cfg.loss.gp_weight, cfg.loss.drift) == ("wgan-gp", 10.0, 0.001)
    assert (cfg.optim.lr_g, cfg.optim.beta1, cfg.optim.beta2) == (1e-3, 0.0, 0.99)
    assert (cfg.model.z_dim, cfg.model.fmap_base, cfg.model.fmap_max, cfg.data.resolution) == (
        512,
        8192,
        512,
        1024,
    )
    cpu = load_config("pggan_cpu")
    assert (cpu.schedule.start_resolution, cpu.data.resolution, cpu.data.name) == (4, 32, "digits")


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
