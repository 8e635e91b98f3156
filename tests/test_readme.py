"""The README's Python example runs as written (in a temporary folder) and gives a sensible result."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    shape, r2 = re.search(r"\((\d+, \d+, \d+)\).*R\^2 ([0-9.]+)", out).groups()
    assert shape == "48, 48, 48" and float(r2) > 0.95
    assert (tmp_path / "example" / "recon.nii.gz").is_file() and (tmp_path / "example" / "recon.json").is_file()
