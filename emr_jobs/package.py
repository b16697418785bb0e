"""Build the EMR Serverless artifacts offline: the entry point and the ``spark.submit.pyFiles`` zip.

The zip holds what the job imports: the ``emr_jobs`` modules that run on EMR and
``margin_risk/{params,names,archive}.py`` under a minimal ``margin_risk/__init__.py``
(the real package pulls in pydantic, which the EMR image does not have). Nothing is downloaded.
Not shipped itself.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_JOB_MODULES = (
    "__init__.py",
    "batch.py",
    "book.py",
    "calc.py",
    "frames.py",
    "history.py",
    "kafka_io.py",
    "metrics.py",
    "outputs.py",
    "parse.py",
    "session.py",
    "state.py",
)
SHIPPED_CORE_MODULES = ("params.py", "names.py", "archive.py")
CORE_INIT = '"""margin_risk subset shipped to EMR Serverless: names, params and archive."""\n'
# A fixed timestamp keeps the zip byte-identical across builds (reproducible artifacts).
_ZIP_DATE = (2026, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class EmrArtifacts:
    entrypoint: Path
    pyfiles_zip: Path


def shipped_files() -> dict[str, bytes]:
    """Archive name -> content of every file in the pyFiles zip."""
    files = {f"emr_jobs/{m}": (ROOT / "emr_jobs" / m).read_bytes() for m in SHIPPED_JOB_MODULES}
    files["margin_risk/__init__.py"] = CORE_INIT.encode()
    for m in SHIPPED_CORE_MODULES:
        files[f"margin_risk/{m}"] = (ROOT / "margin_risk" / m).read_bytes()
    return files


def build_emr_artifacts(out_dir: Path) -> EmrArtifacts:
    """Write ``entrypoint.py`` and ``margin_job.zip`` into out_dir (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entry = out_dir / "entrypoint.py"
    shutil.copyfile(ROOT / "emr_jobs" / "entrypoint.py", entry)
    zpath = out_dir / "margin_job.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(shipped_files().items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return EmrArtifacts(entrypoint=entry, pyfiles_zip=zpath)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/emr")
    try:
        arts = build_emr_artifacts(target)
    except OSError as e:
        sys.exit(f"error: {target}: cannot write the artifacts: {e.strerror or e}")
    print(arts.entrypoint, arts.pyfiles_zip)
