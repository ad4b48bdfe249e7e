"""Start-up cost is shaped by imports: --help loads no torch, predict never loads datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from typer.testing import CliRunner
from rnn_sentiment.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "modules": sorted(sys.modules)}))
"""


def loaded_modules(*args: str) -> tuple[int, set[str]]:
    """Run the CLI in a fresh interpreter; its exit code and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], {name.split(".")[0] for name in report["modules"]}


def test_help_imports_no_torch() -> None:
    code, modules = loaded_modules("--help")
    assert code == 0
    assert not modules & {"torch", "datasets", "tokenizers", "numpy"}


def test_predict_never_imports_datasets(builtin_run: Path) -> None:
    code, modules = loaded_modules("predict", "--model", str(builtin_run), "This movie is good")
    assert code == 0
    assert "torch" in modules
    assert "datasets" not in modules


def test_a_config_error_is_reported_before_torch_loads() -> None:
    # The one-line error of a mistyped key comes back in a fraction of a second, not after the
    # 1.5 s of importing torch (the callbacks the console draws live apart from training).
    for command in (["train", "model.cell=cnn"], ["compare", "model.hiden=3"]):
        code, modules = loaded_modules(*command)
        assert code == 2
        assert "torch" not in modules, command
