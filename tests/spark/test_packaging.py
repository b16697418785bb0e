"""EMR Serverless packaging: an offline zip that imports on the image's Python 3.9."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import emr_jobs
from emr_jobs.package import build_emr_artifacts

FORBIDDEN = {"pydantic", "pydantic_settings", "confluent_kafka", "numpy", "pandas", "boto3"}


def test_release_label_pins_the_spark_version_we_test_with() -> None:
    import pyspark

    assert emr_jobs.EMR_RELEASE_LABEL == "emr-7.10.0"
    assert pyspark.__version__ == emr_jobs.EMR_SPARK_VERSION == "3.5.5"
    major, minor = (int(x) for x in emr_jobs.EMR_RELEASE_LABEL[4:].split(".")[:2])
    assert (major, minor) >= (7, 1)  # streaming job runs need 7.1.0+


def test_every_shipped_file_parses_as_python_3_9_and_imports_no_compiled_deps(
    tmp_path: Path,
) -> None:
    arts = build_emr_artifacts(tmp_path / "dist")
    with zipfile.ZipFile(arts.pyfiles_zip) as zf:
        names = sorted(zf.namelist())
        assert "emr_jobs/batch.py" in names and "margin_risk/params.py" in names
        assert "margin_risk/archive.py" in names and "emr_jobs/history.py" in names
        assert "emr_jobs/local_runner.py" not in names  # needs confluent-kafka
        sources = {n: zf.read(n).decode() for n in names}
    sources["entrypoint.py"] = arts.entrypoint.read_text()
    for name, src in sources.items():
        tree = ast.parse(src, filename=name, feature_version=(3, 9))
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for m in mods:
                assert m.split(".")[0] not in FORBIDDEN, (name, m)


def test_zip_imports_without_the_repository_and_without_pydantic(tmp_path: Path) -> None:
    arts = build_emr_artifacts(tmp_path / "dist")
    code = (
        "import sys, emr_jobs.batch, emr_jobs.kafka_io, margin_risk.params as p; "
        "assert 'pydantic' not in sys.modules; "
        "assert '.zip' in p.__file__, p.__file__; "
        "print(emr_jobs.EMR_RELEASE_LABEL)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(arts.pyfiles_zip)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "emr-7.10.0"


def test_build_is_reproducible(tmp_path: Path) -> None:
    a = build_emr_artifacts(tmp_path / "a").pyfiles_zip.read_bytes()
    b = build_emr_artifacts(tmp_path / "b").pyfiles_zip.read_bytes()
    assert a == b


def test_package_command_reports_an_unwritable_target_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "emr_jobs.package", str(blocker / "emr")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
