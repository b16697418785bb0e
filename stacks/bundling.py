"""Lambda code assets built with plain Python on the synth machine: no Docker, ever.

The bundler copies the project modules the handler imports (`stacks.import_closure`: an
allowlist computed from the source, not whole package folders) into the asset folder and, unless
told to skip,
installs the function's pinned requirements for the Lambda platform with
`pip install --platform manylinux... --only-binary=:all: --python-version 3.12 --target`.
That download happens only when a deploy synthesizes the stack; tests set `skipLambdaDeps`
(or `aws:cdk:bundling-stacks: []`), so they never touch the network.

The asset hash is computed here from the sources, the requirements, the platform and the
skip flag, so it is stable whether bundling runs or is skipped, and any code change redeploys.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

from stacks.import_closure import REPO_ROOT, module_closure, module_file

PYTHON_VERSION = "3.12"
PROJECT_PACKAGES = ("margin_risk", "lambdas")


@dataclass(frozen=True)
class PythonAssetSpec:
    """What goes into one Lambda asset: the project modules its entry modules import, and a
    requirements file."""

    entries: Sequence[str]  # dotted entry modules, e.g. the handler's module
    requirements: str | None
    architecture: str  # "arm64" | "x86_64"
    skip_deps: bool
    packages: Sequence[str] = PROJECT_PACKAGES  # top-level packages whose imports are followed

    def files(self) -> list[Path]:
        """Repo-relative source files of the asset (raises when an entry does not exist)."""
        missing = [e for e in self.entries if module_file(e) is None]
        if missing:
            raise FileNotFoundError(f"Lambda entry module(s) {missing} do not exist in {REPO_ROOT}")
        return module_closure(self.entries, self.packages)

    def pip_platforms(self) -> list[str]:
        arch = "aarch64" if self.architecture == "arm64" else "x86_64"
        # Lambda's Python 3.12 runtime is Amazon Linux 2023 (glibc 2.34): these tags all load.
        return [f"manylinux2014_{arch}", f"manylinux_2_28_{arch}", f"manylinux_2_34_{arch}"]

    def pip_command(self, target: str) -> list[str]:
        assert self.requirements is not None
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-compile", "--only-binary=:all:", "--implementation", "cp"]
        for platform in self.pip_platforms():
            cmd += ["--platform", platform]
        cmd += ["--python-version", PYTHON_VERSION, "--target", target]
        cmd += ["-r", str(REPO_ROOT / self.requirements)]
        return cmd

    def source_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(f"{self.architecture}|{PYTHON_VERSION}|skip={self.skip_deps}".encode())
        files = list(self.files())
        if self.requirements and (REPO_ROOT / self.requirements).exists():
            files.append(Path(self.requirements))
        for f in files:
            digest.update(str(f).encode())
            digest.update((REPO_ROOT / f).read_bytes())
        return digest.hexdigest()


def stage(spec: PythonAssetSpec, output_dir: Path) -> None:
    """Copy the asset's modules (keeping their repo-relative paths) and install the
    requirements."""
    for rel in spec.files():
        dst = output_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dst)
    if spec.requirements and not spec.skip_deps:
        req = REPO_ROOT / spec.requirements
        if not req.exists():
            raise FileNotFoundError(f"requirements file {spec.requirements!r} is missing")
        subprocess.run(spec.pip_command(str(output_dir)), check=True)


@jsii.implements(cdk.ILocalBundling)
class _LocalPythonBundler:
    def __init__(self, spec: PythonAssetSpec) -> None:
        self._spec = spec

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        stage(self._spec, Path(output_dir))
        return True


def python_code(spec: PythonAssetSpec) -> lambda_.Code:
    """A Lambda `Code` asset bundled locally (the Docker image is never pulled)."""
    entry = module_file(spec.entries[0])
    if entry is None:
        raise FileNotFoundError(f"Lambda entry module {spec.entries[0]!r} does not exist")
    return lambda_.Code.from_asset(
        str(entry.parent),
        asset_hash=spec.source_hash(),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            # Required by the API; local bundling always succeeds first, so it is never pulled.
            image=cdk.DockerImage.from_registry("local-bundling-only"),
            local=_LocalPythonBundler(spec),
        ),
    )
