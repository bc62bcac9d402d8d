"""``unmask eval``'s one-line refusals (session 36 of the eval audit)."""

from unmask.cli import main


def test_a_folder_given_for_the_gap_set_is_named_a_folder(tmp_path, capsys):
    """It read "no such gap set" of a folder that is there (the gap set is a file in it)."""
    (tmp_path / "gaps").mkdir()
    assert main(["eval", "demo", "--gaps", str(tmp_path / "gaps"), "--no-score"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a folder, not a gap set" in err and len(err.splitlines()) == 1
    assert main(["eval", "demo", "--gaps", str(tmp_path / "none.jsonl"), "--no-score"]) == 2
    assert "no such gap set" in capsys.readouterr().err


def test_an_empty_gap_set_name_is_named_empty(capsys):
    """``--gaps ""`` read "--gaps : a folder, not a gap set" (Path("") is the current
    folder)."""
    assert main(["eval", "demo", "--gaps", "", "--no-score"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--gaps is empty" in err and "folder" not in err and len(err.splitlines()) == 1
