"""The MLX variant of the json scenario: the same workload, reference and checker as json, its
model on device "mlx", and only knobs that apply to the MLX model in its search."""

from __future__ import annotations

import tomllib

from vibekit_agents.scenario import load_scenario

from .conftest import REPO


def test_json_mlx_is_the_json_scenario_on_device_mlx():
    mlx, base = load_scenario(REPO / "scenarios" / "json-mlx"), load_scenario(
        REPO / "scenarios" / "json")
    assert mlx.model.device == "mlx" and base.model.device == "cpu"
    assert mlx.resolved_model()[0] == base.resolved_model()[0]  # model.json links to json's
    assert mlx.workload == base.workload and mlx.checker == base.checker
    for name in ("workload", "reference", "checker"):
        assert (mlx.root / f"{name}.py").read_text() == (base.root / f"{name}.py").read_text()
    assert not {"cuda-graphs", "torch-compile", "cpu-threads"} & set(mlx.search.primitives)
    start = tomllib.loads(mlx.toml_path.read_text())["start"]
    assert "runtime" not in start  # no torch thread count for an MLX model
