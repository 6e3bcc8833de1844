"""shellcheck over every shell script of the repository (CI runs it through the test suite).

The scripts are the tracked and new (not ignored) files named ``*.sh`` plus any other such file
that starts with a sh/bash shebang (``.ci/run``). The repository's ``.shellcheckrc`` lets
shellcheck follow the files a script sources. tools/setup.sh installs shellcheck (Debian
package) with the other apt packages; without it this test is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHEBANG = re.compile(rb"^#!\s*(/usr/bin/env\s+)?(/\S*/)?(ba)?sh\b")


def shell_scripts() -> list[str]:
    """Repository-relative paths of the tracked and new (not ignored) shell scripts."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, stdout=subprocess.PIPE, check=True,
    ).stdout.decode().split("\0")
    scripts = set()
    for name in filter(None, listed):
        path = REPO / name
        if not path.is_file() or path.is_symlink():
            continue
        if name.endswith(".sh"):
            scripts.add(name)
            continue
        with path.open("rb") as f:
            if SHEBANG.match(f.readline(128)):
                scripts.add(name)
    return sorted(scripts)


def test_every_script_is_found() -> None:
    scripts = shell_scripts()
    for name in ("run.sh", "egs2/mini_an4/asr1/run.sh", "egs2/TEMPLATE/asr1/asr.sh",
                 "egs2/TEMPLATE/asr1/path.sh", "tools/setup.sh", ".ci/run"):
        assert name in scripts, f"{name} not among {scripts}"


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (tools/setup.sh installs the Debian package "
                           "as root; or: apt-get install shellcheck)")
def test_shellcheck_reports_nothing() -> None:
    proc = subprocess.run(
        ["shellcheck", "--external-sources", "--format", "gcc", *shell_scripts()],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"shellcheck reports (exit code {proc.returncode}):\n{proc.stdout}"
