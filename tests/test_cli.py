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
