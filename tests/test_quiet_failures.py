"""Settings and inputs that did nothing, or failed with the wrong words, are refused in one line (issue 34)."""

import pytest

from jaxswarm import cli
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
