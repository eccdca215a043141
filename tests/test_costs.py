"""The cost model: auto's choice reads it, `jaxswarm calibrate` writes it, a study records and resumes with it."""

import json
import math
import os

import pytest

from jaxswarm import cli, costs, results
from jaxswarm import data as data_lib
from jaxswarm import study as study_lib
from jaxswarm.layouts import DataShape, auto, resolve
from jaxswarm.models import cnn_space, family_of, mlp_space

IMAGE = DataShape(784, 10, None)
BIG = dict(swarm_size=32, rounds=10, epochs=5)  # the built-in model takes packed (MLP) and serial (CNN) here
TINY = dict(swarm_size=2, rounds=1, epochs=1, batch_size=32)  # a digits study: the built-in model takes masked
SPACE = mlp_space(max_layers=1, units=(4, 8))


@pytest.fixture(autouse=True)
def _no_user_files(tmp_path, monkeypatch):
    """The default file in a fresh folder, so no test reads or writes the developer's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_dataset("digits", seed=0)


def _model(source: str, **figures) -> dict:
    return costs.BUILTIN._replace(source=source, **figures)._asdict()


# -- (a) auto's choice reads the cost model ----------------------------------


@pytest.mark.parametrize("space, field, values, layouts", [
    # An MLP study: packing pays when compiles are cheap, training slow or packed plans tight.
    (mlp_space(), "packed_compile_s", (1e-3, 1e6), ("packed", "masked")),
    (mlp_space(), "train_flops", (1e6, 1e18), ("packed", "masked")),
    (mlp_space(), "packed_efficiency", (1.0, 0.05), ("packed", "masked")),
    # A CNN study: the serial layout pays when its longer compile is cheap.
    (cnn_space(), "serial_compile_s", (1e-3, 1e9), ("serial", "masked")),
])
def test_each_figure_auto_weighs_changes_its_choice(space, field, values, layouts):
    shape = DataShape(784, 10, (28, 28, 1)) if family_of(space).name == "cnn" else IMAGE
    for value, layout in zip(values, layouts):
        config = study_lib.StudyConfig(**BIG, cost_model={field: value, "source": f"test {field}={value}"})
        name, why = auto.choose(family_of(space), space, config, shape, 54_000, backend="cpu")
        assert name == layout, (field, value, why)
        assert f"cost model (test {field}={value})" in why  # the reason names the model it weighed
        chosen, line = resolve("auto", family_of(space), space, config, shape, 54_000)
        assert chosen.name == layout and line.endswith(f"{costs.describe(costs.of(config))})")


def test_a_study_picks_its_layout_with_its_cost_model(digits, tmp_path, monkeypatch):
    """Constructing a Study compiles no training program: its layout is the cost model's choice."""
    cheap = _model("cheap compiles", packed_compile_s=1e-9)
    built_in = study_lib.Study(SPACE, digits, study_lib.StudyConfig(**TINY), progress=False)
    given = study_lib.Study(SPACE, digits, study_lib.StudyConfig(**TINY, cost_model=cheap), progress=False)
    assert (built_in.layout.name, given.layout.name) == ("masked", "packed")
    assert given.config.cost_model == cheap and "cost model (cheap compiles)" in given.layout_reason
    assert built_in.config.cost_model == costs.BUILTIN._asdict()  # resolved once, stored as a dict
    # No cost_model in the config: the machine's file (here named by the environment variable).
    costs.save(costs.from_dict(cheap), tmp_path / "machine.json")
    monkeypatch.setenv(costs.ENV, str(tmp_path / "machine.json"))
    machine = study_lib.Study(SPACE, digits, study_lib.StudyConfig(**TINY), progress=False)
    assert machine.layout.name == "packed" and machine.config.cost_model == cheap


# -- (b) `jaxswarm calibrate` -------------------------------------------------


def test_calibrate_tiny_writes_a_model_that_loads_back(tmp_path, capsys):
    out = tmp_path / "models" / "x.json"
    assert cli.main(["calibrate", "--tiny", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    model = costs.load(out)
    assert json.loads(out.read_text()) == model._asdict()  # the file is the model, field for field
    assert all(math.isfinite(getattr(model, f)) and getattr(model, f) > 0
               for f in costs.CostModel._fields if f != "source")
    assert model.source.startswith("calibrated --tiny ") and model != costs.BUILTIN
    assert model.packed_compile_s != costs.BUILTIN.packed_compile_s  # measured, not copied
    assert f"saved to {out}" in printed and costs.describe(model) in printed
    assert not costs.default_path().exists()  # --output only


def test_calibrate_refuses_a_directory_in_one_line(tmp_path, capsys):
    assert cli.main(["calibrate", "--tiny", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxswarm: error: --output ") and "\n" not in err


# -- (c) where the model comes from, and bad files ---------------------------


def test_load_reads_the_variable_then_the_default_file_else_builtin(tmp_path, monkeypatch):
    monkeypatch.delenv(costs.ENV, raising=False)
    assert costs.load() == costs.BUILTIN  # no file yet
    mine = costs.BUILTIN._replace(train_flops=123e9, source="mine")
    assert costs.save(mine) == tmp_path / "cache" / "jaxswarm" / "cost_model.json"  # XDG_CACHE_HOME honoured
    assert costs.load() == mine and costs.of(None) == mine
    other = costs.BUILTIN._replace(packed_compile_s=2.5, source="other")
    costs.save(other, tmp_path / "other.json")
    monkeypatch.setenv(costs.ENV, str(tmp_path / "other.json"))
    assert costs.load() == other and costs.save(mine) == tmp_path / "other.json"  # save writes where load reads
    monkeypatch.setenv(costs.ENV, "builtin")
    assert costs.load() == costs.BUILTIN  # whatever file there is
    monkeypatch.setenv(costs.ENV, str(tmp_path / "missing.json"))
    assert costs.load() == costs.BUILTIN


def test_the_test_run_pins_the_builtin_model():
    assert os.environ[costs.ENV] == "builtin"  # conftest: a calibrated file never changes a test's result


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"train_flops": -1}', '{"train_flops": "fast"}',
                                  '{"speed": 1}', '{"packed_efficiency": 2}', '{"serial_compile_s": NaN}'])
def test_a_bad_file_is_one_line_naming_it(text, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError) as e:
        costs.load(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv(costs.ENV, str(bad))
    with pytest.raises(ValueError, match="bad.json"):
        costs.of(study_lib.StudyConfig())


def test_a_bad_model_file_stops_a_run_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.json").write_text('{"train_flops": 0}')
    monkeypatch.setenv(costs.ENV, str(tmp_path / "bad.json"))
    assert cli.main(["run", "--out", str(tmp_path / "run"), "--swarm-size", "2", "--rounds", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxswarm: error: cost model file ") and "bad.json" in err and "\n" not in err


def test_a_config_cost_model_is_checked():
    assert costs.of(study_lib.StudyConfig(cost_model={"train_flops": 1e12})).train_flops == 1e12
    for bad in ({"train_flops": 0}, {"speed": 1.0}, {"packed_efficiency": True}, [1.0]):
        with pytest.raises(ValueError, match="cost_model"):
            study_lib.StudyConfig(cost_model=bad).validate()


# -- (d) study.json records the model; a resume plans with it -----------------


def test_a_resumed_study_keeps_its_recorded_cost_model(digits, tmp_path, monkeypatch, capsys):
    recorded, later = _model("planted-A"), _model("planted-B", packed_compile_s=1e-9)
    costs.save(costs.from_dict(recorded), tmp_path / "a.json")
    costs.save(costs.from_dict(later), tmp_path / "b.json")
    out = tmp_path / "run"
    monkeypatch.setenv(costs.ENV, str(tmp_path / "a.json"))
    assert cli.main(["run", "--out", str(out), "--swarm-size", "2", "--rounds", "1", "--epochs", "1",
                     "--max-layers", "1", "--units", "4", "8", "--no-retrain"]) == 0
    saved = json.loads((out / results.STUDY).read_text())
    assert saved["config"]["cost_model"] == recorded and "(planted-A)" in saved["layout"]["reason"]
    assert saved["layout"]["name"] == "masked"
    capsys.readouterr()
    monkeypatch.setenv(costs.ENV, str(tmp_path / "b.json"))  # calibrated between the run and its resume
    # The control: this machine's model now picks another layout for the same study.
    fresh = study_lib.Study(SPACE, digits, study_lib.StudyConfig(**{**TINY, "batch_size": 64}), progress=False)
    assert fresh.layout.name == "packed"
    assert cli.main(["run", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith("layout auto -> "))
    assert line == saved["layout"]["reason"] and "planted-B" not in printed
    # A study recorded before cost models existed planned with the built-in figures: it resumes with them.
    del saved["config"]["cost_model"]
    (out / results.STUDY).write_text(json.dumps(saved))
    assert cli.main(["run", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layout auto -> masked: " in printed and f"({costs.describe(costs.BUILTIN)})" in printed
