"""Settings and inputs that did nothing, or failed with the wrong words, are refused in one line (issue 34)."""

import numpy as np
import pytest

from jaxswarm import cli, results, saved
from jaxswarm.models import mlp_space
from jaxswarm.space import Fixed
from jaxswarm.study import StudyConfig


@pytest.mark.parametrize("settings, message", [
    ({"eta": 5}, "eta applies to schedule 'sha' or 'hyperband', not 'none'"),
    ({"schedule": "pbt", "min_epochs": 2}, "min_epochs applies to schedule 'sha' or 'hyperband', not 'pbt'"),
    ({"schedule": "sha", "pbt_fraction": 0.3}, "pbt_fraction applies to schedule 'pbt', not 'sha'"),
])
def test_a_schedule_setting_without_its_schedule_is_refused(settings, message):
    """--eta 5 without --schedule did nothing, silently."""
    with pytest.raises(ValueError, match=message):
        StudyConfig(**settings).validate()


def test_a_pinned_learning_rate_is_a_fixed_value():
    """--learning-rate 0.001 0.001 pins the rate (it was refused with advice only Python could follow)."""
    space = mlp_space(learning_rate=(1e-3, 1e-3))
    assert isinstance(space.params["learning_rate"], Fixed) and space.params["learning_rate"].value == 1e-3
    assert "learning_rate" not in space.dim_names


def test_predict_refuses_an_empty_csv_in_one_line(tmp_path):
    """An empty CSV reported 'got 1 features'."""
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(cli.InputError, match="holds no rows .only a header."):
        cli._read_rows(tmp_path / "empty.csv")


def test_plot_into_a_folder_it_cannot_write_says_so(tmp_path, monkeypatch, capsys):
    """A read-only results folder was reported as 'nothing to plot'. (Root writes anywhere, so the refusal is
    raised where the plot would be written.)"""
    (tmp_path / "rounds.jsonl").write_text('{"round": 0, "best_fitness": 0.5, "median_fitness": 0.4}\n')

    def read_only(out_dir):
        raise PermissionError(13, "Permission denied", str(out_dir / "progress.png"))

    monkeypatch.setattr(cli.results, "plot", read_only)
    assert cli.main(["plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the plots" in err and "Permission denied" in err
    assert "nothing to plot" not in err


def _disk_full(path):
    def fail(*args, **kwargs):
        try:
            raise OSError(28, "No space left on device", str(path))
        except OSError as e:  # orbax wraps the OSError in its own errors
            raise RuntimeError("orbax: a long message\nwith many lines") from e
    return fail


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_file(tmp_path, monkeypatch):
    ckpt = results.Checkpointer(tmp_path / "checkpoints")
    monkeypatch.setattr(ckpt.manager, "save", _disk_full(tmp_path / "checkpoints" / "1" / "x"))
    with pytest.raises(results.CheckpointError) as err:
        ckpt.save(1, {"a": np.zeros(3)})
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "checkpoints/1/x" in message


def test_a_full_disk_during_the_model_save_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(saved, "_write_bytes", lambda path, blob: (_ for _ in ()).throw(
        OSError(28, "No space left on device", str(path))))
    with pytest.raises(saved.ModelError, match=r"^cannot save the model in .*: No space left on device: "
                                               r"'.*variables.msgpack'$"):
        saved._write_model(tmp_path, {}, "metrics", saved.VARIABLES, b"weights")  # what both models save by
    assert not list(tmp_path.glob(".model.*"))  # nothing half-written left behind


def test_the_command_line_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results.Checkpointer, "save", lambda self, step, tree: (_ for _ in ()).throw(
        results.CheckpointError(f"cannot save the checkpoint of round {step}: No space left on device")))
    code = cli.main(["run", "--swarm-size", "2", "--rounds", "1", "--epochs", "1", "--out", str(tmp_path / "r"),
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "No space left on device" in err and "--resume" in err
