"""Models named ``package.module:ClassName`` with JSON keyword arguments."""
import pytest
import torch

from satloss_gpu.training.model_spec import (is_model_spec, model_from_spec, parse_model_kwargs,
                                    parse_model_spec)

MODULE = '''
import torch


class TinyNet(torch.nn.Module):
    def __init__(self, in_channels=3, width=4):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(in_channels, width, 3, padding=1),
                                        torch.nn.ReLU(), torch.nn.Conv2d(width, 1, 1))

    def forward(self, x):
        return self.body(x)


def tiny_net(width=2):
    return TinyNet(width=width)


NOT_A_MODEL = 3


def not_a_module():
    return "nothing"
'''


@pytest.fixture()
def in_cwd(tmp_path, monkeypatch):
    (tmp_path / "user_models_spec.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_class_and_function_from_the_current_folder(in_cwd):
    net = model_from_spec("user_models_spec:TinyNet", {"width": 5})
    assert isinstance(net, torch.nn.Module) and net.body[0].out_channels == 5
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 1, 8, 8)
    assert model_from_spec("user_models_spec:tiny_net").body[0].out_channels == 2


def test_installed_module():
    net = model_from_spec("torch.nn:Conv2d", {"in_channels": 3, "out_channels": 1,
                                              "kernel_size": 1})
    assert isinstance(net, torch.nn.Conv2d)


def test_spec_and_kwargs_parsing():
    assert is_model_spec("a.b:C") and not is_model_spec("UNet")
    assert parse_model_spec(" pkg.mod:Outer.Inner ") == ("pkg.mod", "Outer.Inner")
    assert parse_model_kwargs(None) == {} and parse_model_kwargs("  ") == {}
    assert parse_model_kwargs('{"width": 8, "widths": [1, 2]}') == {"width": 8, "widths": [1, 2]}


@pytest.mark.parametrize("spec,match", [
    ("a:b:c", "'package.module:ClassName'"),
    ("pkg.mod:", "'package.module:ClassName'"),
    (":Name", "'package.module:ClassName'"),
    ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz'"),
    ("user_models_spec:Missing", "has no attribute 'Missing'"),
    ("user_models_spec:NOT_A_MODEL", "not a class or function"),
    ("user_models_spec:not_a_module", "must build a torch.nn.Module; got str"),
])
def test_bad_specs_name_the_argument(in_cwd, spec, match):
    with pytest.raises(ValueError, match=match):
        model_from_spec(spec)


@pytest.mark.parametrize("text,match", [
    ("{width: 3}", "`model_kwargs` must be a JSON object; cannot parse"),
    ("[1, 2]", "`model_kwargs` must be a JSON object such as"),
])
def test_bad_kwargs(text, match):
    with pytest.raises(ValueError, match=match):
        parse_model_kwargs(text)


def test_tloss_kwargs_error_gives_no_model_example(capsys):
    """The JSON-object message is shared by --model_kwargs and --tloss_kwargs: its example
    must not be a model's argument."""
    from satloss_gpu.training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--tloss_kwargs", "[1]"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--tloss_kwargs" in err and "must be a JSON object" in err
    assert "in_channels" not in err


def test_kwargs_the_constructor_rejects(in_cwd):
    with pytest.raises(ValueError, match="`model_kwargs` .* do not fit user_models_spec:TinyNet"):
        model_from_spec("user_models_spec:TinyNet", {"depth": 3})
