"""Files bip writes for a user: checked before the work, written whole or not at all."""

from __future__ import annotations

import pytest

from bip.errors import UserError
from bip.files import output_file, written_whole


def test_a_file_is_replaced_only_once_written_whole(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("the previous predictions\n")
    with pytest.raises(KeyboardInterrupt), written_whole(target) as partial:
        partial.write_text("half of the new ")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    assert target.read_text() == "the previous predictions\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # nothing half-written left beside it
    with written_whole(target) as partial:
        partial.write_text("the new predictions\n")
    assert target.read_text() == "the new predictions\n" and len(list(tmp_path.iterdir())) == 1


def test_an_output_file_is_checked_and_its_folder_made(tmp_path):
    assert output_file(tmp_path / "a" / "b" / "out.json").parent.is_dir()
    with pytest.raises(UserError, match="is a folder"):
        output_file(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        output_file(tmp_path / "file" / "out.json")


def test_an_interrupted_export_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    from features import contract_reading
    from features.contract import read_dataset, write_dataset
    from simulator.simulation import simulate

    first = simulate(60, seed=3, truth_draws=0).dataset
    write_dataset(first, tmp_path / "export")
    before = {p.name: p.read_bytes() for p in (tmp_path / "export").iterdir()}
    written = []

    def fails_on_the_fourth_table(table, path, *args, **kwargs):
        written.append(path)
        if len(written) == 4:
            raise KeyboardInterrupt
        return original(table, path, *args, **kwargs)

    original = contract_reading.pacsv.write_csv
    monkeypatch.setattr(contract_reading.pacsv, "write_csv", fails_on_the_fourth_table)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(simulate(80, seed=4, truth_draws=0).dataset, tmp_path / "export")
    assert {p.name: p.read_bytes() for p in (tmp_path / "export").iterdir()} == before
    monkeypatch.undo()
    assert len(read_dataset(tmp_path / "export")[0].citizens) == len(first.citizens)
