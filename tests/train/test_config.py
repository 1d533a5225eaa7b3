import pytest

from normlab.train import config as c
from normlab.train.config import ConfigError, RunConfig


def test_defaults_are_the_books_lenet():
    cfg = RunConfig()
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.9, 0.0, 0.0)
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.train.init) == (256, 10, "xavier")


def test_toml_round_trip(tmp_path):
    cfg = c.override(RunConfig(), {"resize": 96, "model.options.width_divisor": "4", "lr": 0.05, "norm": "group"})
    path = tmp_path / "config.toml"
    path.write_text(c.dumps(cfg))
    assert c.load(path) == cfg
    assert "resize = 96" in path.read_text() and "root" not in path.read_text()  # None is left out


def test_resolution_order(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('[optim]\nlr = 0.5\nschedule = "cosine"\n[data]\nbatch_size = 128\n')
    cfg = c.resolve("alexnet", path, {"optim.lr": "0.25", "epochs": "3"}, {"train.epochs": 4, "data.resize": None})
    assert cfg.model.name == "alexnet"
    assert cfg.data.resize == 224                  # the book's setting, untouched
    assert cfg.data.batch_size == 128              # the file over the book's 128 (same) / default 256
    assert cfg.optim.schedule == "cosine"          # the file
    assert cfg.optim.lr == 0.25                    # --set over the file
    assert cfg.train.epochs == 4                   # a flag over --set
    assert c.resolve(None, path).model.name == "lenet_bn"  # no model named anywhere


def test_config_file_can_name_the_model(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[model]\nname = "vgg"\n')
    cfg = c.resolve(None, path)
    assert cfg.model.name == "vgg" and cfg.model.options == {"width_divisor": 4} and cfg.optim.lr == 0.05


@pytest.mark.parametrize("key, value, expected", [
    ("lr", "0.5", 0.5), ("epochs", "7", 7), ("compile", "true", True), ("resize", "none", None),
    ("norm", "none", "none"), ("model.norm", None, None),
    ("resize", "224", 224), ("resize", None, None), ("norm", "group", "group"), ("lr", 1, 1.0),
    ("model.options", "{hidden = [8, 8]}", {"hidden": [8, 8]}),
])
def test_values_are_coerced_to_the_field_type(key, value, expected):
    assert c.coerce(key, value) == expected


@pytest.mark.parametrize("updates, message", [
    ({"lrr": 1}, "unknown config key 'lrr'; valid keys: data.dataset, data.batch_size"),
    ({"epochs": "three"}, "config key train.epochs takes int, got 'three'"),
    ({"compile": "maybe"}, "config key train.compile takes bool, got 'maybe'"),
    ({"lr": True}, "config key optim.lr takes float, got True"),
])
def test_bad_keys_and_values_name_the_valid_ones(updates, message):
    with pytest.raises(ConfigError, match=message):
        c.override(RunConfig(), updates)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file .* not found"):
        c.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[optim\nlr = 1")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        c.load(tmp_path / "bad.toml")
    (tmp_path / "section.toml").write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[optimizer\]; valid sections: data, model, optim, train"):
        c.load(tmp_path / "section.toml")
    (tmp_path / "code.toml").write_text('[optim]\nlr = "__import__(\'os\').system(\'true\')"\n')
    with pytest.raises(ConfigError, match="takes float"):  # parsed, never evaluated
        c.load(tmp_path / "code.toml")


def test_parse_set():
    assert c.parse_set(["optim.lr=0.5", " epochs = 3"]) == {"optim.lr": "0.5", "epochs": "3"}
    with pytest.raises(ConfigError, match="a setting takes key=value, got 'lr'"):
        c.parse_set(["lr"])


def test_every_zoo_model_has_book_settings():
    from normlab.models import list_models
    assert set(c.BOOK_SETTINGS) == set(list_models())
    for settings in c.BOOK_SETTINGS.values():
        c.override(RunConfig(), settings)  # every key valid


def test_shipped_recipes_load_by_name():
    assert "lenet_bn_best" in c.list_recipes()
    cfg = c.resolve(None, "lenet_bn_best")
    assert (cfg.model.name, cfg.optim.optimizer, cfg.optim.schedule, cfg.optim.decay_vectors) == \
        ("lenet_bn", "adamw", "cosine", False)
    assert cfg.data.batch_size == 128 and cfg.train.epochs == 10
