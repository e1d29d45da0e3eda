"""The ``iternet-monai`` command answers --help and argument errors at once: without importing torch or MONAI."""

import subprocess
import sys

import pytest

PROBE = """
import sys
from iternet_monai.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(sorted(name for name in ("torch", "monai", "ignite") if name in sys.modules))
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["evaluate", "--help"], ["evaluate"], ["make-datalist", "--help"], ["no-such-command"]]
)
def test_help_and_argument_errors_do_not_import_torch_or_monai(args):
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_an_existing_evaluation_is_refused_before_torch_is_imported(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")
    args = ["evaluate", "--datalist", "drive", "--dataset-dir", str(tmp_path), "--output", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert result.stderr.strip().splitlines() == [
        f"iternet-monai: {tmp_path / 'out' / 'metrics.json'} exists; choose another output folder or pass --overwrite"
    ]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_describes_itself_and_every_option(capsys):
    from iternet_monai import __version__
    from iternet_monai.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"iternet-monai {__version__}"
    parser = build_parser()
    assert "biomarker" in parser.description and "one line" in parser.description
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    evaluate = commands["evaluate"]
    assert evaluate.parse_args(["--datalist", "d", "--dataset-dir", "x"]).data_key == "testing"
    assert (
        evaluate.parse_args(["--datalist", "d", "--dataset-dir", "x", "--key", "validation"]).data_key == "validation"
    )
    assert "--key" not in evaluate.format_help() and "--data-key" in evaluate.format_help()
