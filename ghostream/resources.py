"""Files shipped inside the package: page templates, static files, the player's hls.js, migrations.

They are found with `importlib.resources`, never relative to a checkout, so a
wheel installed by pip or pipx (or into a container image) finds them where
an editable install does. They are only read: the history and anything else
the server writes go to the configured paths.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = files("ghostream")
MIGRATIONS = PACKAGE / "migrations"
# The one npm asset shipped: the player's LL-HLS fallback (see ghostream/web/package.json).
HLS_JS = PACKAGE.joinpath("web", "node_modules", "hls.js", "dist", "hls.min.js")


def on_disk(resource: Traversable) -> Path:
    """A shipped file or folder as a path, for Jinja's loader and Starlette's file responses.

    pip and pipx unpack wheels into plain files, where the resource is a path
    already; a zipped install is refused at start with this message rather than
    failing on the first request.
    """
    if not isinstance(resource, Path):
        raise RuntimeError(f"Ghostream must be installed as plain files, not zipped: {resource}")
    return resource
