"""``virtual-contrast model-info``: figures agree with the built network; bad names are user errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from VirtualContrastLib import model_info
from VirtualContrastLib.cli import main
from VirtualContrastLib.config import ModelConfig
from VirtualContrastLib.errors import VirtualContrastError
from VirtualContrastLib.networks import ARCHITECTURES, build_network, count_flops, count_parameters


def _run(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser()
    model_info.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["model-info", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out


def _expected(arch: str, width: int, inputs: list[str]) -> tuple[int, int]:
    config = ModelConfig(architecture=arch, arch_kwargs={"width": width}, inputs=inputs)
    with torch.device("meta"):
        model = build_network(config)
    return count_parameters(model), count_flops(model, (1, len(inputs), 3, 256, 192))


def test_json_matches_the_built_network(capsys):
    info = json.loads(_run(["--json", "--width", "8", "--variant", "hrfcn_c", "--inputs", "t1,t2"], capsys))
    config = ModelConfig(architecture="hrfcn_c", arch_kwargs={"width": 8}, inputs=["t1", "t2"])
    assert info["parameters"] == count_parameters(build_network(config))
    assert (info["parameters"], info["flops_per_slab"]) == _expected("hrfcn_c", 8, ["t1", "t2"])
    assert (info["variant"], info["width"], info["inputs"]) == ("hrfcn_c", 8, ["t1", "t2"])


def test_default_is_the_papers_final_model(capsys):
    info = json.loads(_run(["--json"], capsys))
    assert (info["variant"], info["width"], info["inputs"]) == ("hrfcn", 64, ["t1", "t2", "adc"])
    assert (info["parameters"], info["flops_per_slab"]) == _expected("hrfcn", 64, ["t1", "t2", "adc"])
    assert type(info["parameters"]) is int and type(info["flops_per_slab"]) is int


def test_text_output_names_parameters_and_flops(capsys):
    out = _run(["--variant", "hrfcn_b", "--width", "8"], capsys)
    parameters, flops = _expected("hrfcn_b", 8, ["t1", "t2", "adc"])
    assert f"{parameters:,}" in out and f"{flops:,}" in out


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(VirtualContrastError) as error:
        model_info.describe("hrnet", 8, ["t1"])
    assert all(name in str(error.value) for name in ARCHITECTURES)


def test_module_import_does_not_import_torch():
    code = "import sys, VirtualContrastLib.model_info; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_through_the_full_command_line(capsys):
    assert main(["model-info", "--json", "--width", "8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == count_parameters(build_network(ModelConfig(arch_kwargs={"width": 8})))
    assert main(["model-info", "--variant", "nope"]) == 2
    assert "unknown variant" in capsys.readouterr().err
