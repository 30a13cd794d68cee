"""The command line: subcommands run and report errors without tracebacks."""

from __future__ import annotations

from vop.cli import main


def test_params_prints_every_method(capsys):
    assert main(["params", "--backbone", "ViT-B-32"]) == 0
    out = capsys.readouterr().out
    import vop.methods

    for name in vop.methods.names():
        assert f"\n{name} " in out
    assert "122,880" in out and "14,257,152" in out


def test_params_unknown_backbone_is_a_clear_error(capsys):
    assert main(["params", "--backbone", "ViT-X"]) == 2
    assert "unknown backbone 'ViT-X'" in capsys.readouterr().err


def test_import_vop_has_no_side_effects():
    import subprocess
    import sys

    code = "import sys, vop; print(sorted(m for m in ('torch', 'av', 'vop.backbone') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
