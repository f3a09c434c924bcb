"""Build hook: the wheel and the sdist carry the player's npm assets, or the build stops.

Everything else is declared in pyproject.toml. hls.js (the player's LL-HLS
fallback) comes from npm, not from this repository: before building, it is
installed with `npm ci` from ghostream/web/package-lock.json when missing, and
the build fails with a message saying so when npm is not there either, rather
than ship a player without its fallback. Editable installs read the checkout,
where scripts/run and scripts/test install it.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

WEB = Path(__file__).resolve().parent / "ghostream" / "web"
NPM_ASSETS = [WEB / "node_modules" / "hls.js" / "dist" / "hls.min.js"]


def missing_assets() -> list[Path]:
    return [path for path in NPM_ASSETS if not path.is_file()]


def ensure_npm_assets() -> None:
    if not missing_assets():
        return
    npm = shutil.which("npm")
    if npm is None or not (WEB / "package-lock.json").is_file():
        names = ", ".join(str(path.relative_to(WEB)) for path in missing_assets())
        raise SystemExit(
            f"error: the player's npm assets are missing ({names}) and npm is not installed: "
            "install Node.js, or run `npm ci --prefix ghostream/web` where npm is, then build again"
        )
    print("installing the player's npm assets: npm ci --prefix ghostream/web", file=sys.stderr)
    command = [npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--prefix", str(WEB)]
    subprocess.run(command, check=True, stdout=sys.stderr)
    if missing_assets():
        raise SystemExit(f"error: npm ci did not install {missing_assets()}")


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        if not getattr(self, "editable_mode", False):
            ensure_npm_assets()
        super().run()


class SdistWithAssets(sdist):
    def run(self) -> None:
        ensure_npm_assets()
        super().run()


setup(cmdclass={"build_py": BuildPyWithAssets, "sdist": SdistWithAssets})
