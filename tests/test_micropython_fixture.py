def test_firmware_package_imports_on_micropython(micropython_run) -> None:
    out = micropython_run("import sys, sqalfw\nprint(sys.implementation.name, sqalfw.VERSION)")
    assert out.stdout.split() == ["micropython", "0.1.0"]


def test_micropython_failure_is_reported(micropython_run) -> None:
    out = micropython_run("raise ValueError('boom')", check=False)
    assert out.returncode != 0
    assert "boom" in out.stderr + out.stdout
