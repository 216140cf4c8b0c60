"""The command line: help, clean one-line errors, and no data lost on failure."""

import pytest

from mlmd.io import atomic_write


def test_help_lists_generate(mlmd_cli):
    result = mlmd_cli("--help")
    assert result.returncode == 0
    assert "generate" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("generate", "unobtainium"), "unknown system 'unobtainium'"),
        (("generate", "cu", "--calculator", "no-such-calculator", "--frames", "2"), "unknown calculator"),
        (("generate", "cu", "--frames", "0"), "--frames must be at least 1"),
        (("generate", "cu", "--temperatures", "hot"), "--temperatures must be comma-separated"),
        (("generate", "cu", "--frames", "2", "-o", "missing-folder/cu.xyz"), "folder missing-folder does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(tmp_path, mlmd_cli, args, message):
    result = mlmd_cli(*args, "--quiet", "--equilibration", "2", "--stride", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.xyz"
    target.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as stream:
            stream.write("half a file")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.xyz"]


def test_successful_write_replaces_the_file(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")
    with atomic_write(target) as stream:
        stream.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "atomic.txt"
    with atomic_write(target) as stream:
        stream.write("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
