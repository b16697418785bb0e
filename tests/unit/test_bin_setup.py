"""`bin/setup` on a machine without Java, and who installs Chromium (the tests, not the demo)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _machine_without_java(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of bin/setup in a repo whose requirements are already installed (so it skips pip),
    run with a PATH holding only the tools it needs, none of them a java."""
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "bin" / "setup", repo / "bin" / "setup")
    (repo / "requirements.txt").write_text("pydantic\n")
    (repo / "requirements-dev.txt").write_text("-r requirements.txt\n")
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    sha = hashlib.sha256(b"pydantic\n-r requirements.txt\n").hexdigest()
    (repo / ".venv" / ".requirements.sha").write_text(sha + "\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "cat", "sha256sum", "cut", "dirname", "id"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    env = {"PATH": str(tools), "HOME": str(tmp_path), "SKIP_NODE": "1"}
    return repo, env


def test_setup_without_java_says_in_one_line_how_to_install_it(tmp_path: Path) -> None:
    repo, env = _machine_without_java(tmp_path)
    note = subprocess.run(
        ["bash", "bin/setup"], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    assert note.returncode == 0  # a note only, for set-ups that do not run Spark
    (line,) = note.stderr.strip().splitlines()
    assert "no Java runtime" in line and "apt-get install -y openjdk-17-jre-headless" in line
    # the demo and the tests ask for Java: the same line, and a failure
    required = subprocess.run(
        ["bash", "bin/setup"],
        cwd=repo,
        env={**env, "REQUIRE_JAVA": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert required.returncode == 1 and required.stderr.strip() == line
    # with JAVA_HOME set to a runtime, nothing is said
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text("#!/bin/sh\n")
    (java_home / "bin" / "java").chmod(0o755)
    ok = subprocess.run(
        ["bash", "bin/setup"],
        cwd=repo,
        env={**env, "REQUIRE_JAVA": "1", "JAVA_HOME": str(java_home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and ok.stderr == ""


def test_chromium_is_installed_by_the_test_command_not_by_the_demo_set_up() -> None:
    setup = (ROOT / "bin" / "setup").read_text()
    demo = (ROOT / "bin" / "demo").read_text()
    test = (ROOT / "bin" / "test").read_text()
    assert "chromium" not in setup.lower() and "chromium" not in demo.lower()
    assert "apt-get install -y -qq chromium" in test
    assert "REQUIRE_JAVA=1 bin/setup" in demo and "REQUIRE_JAVA=1 bin/setup" in test
    assert os.access(ROOT / "bin" / "setup", os.X_OK)
