"""mkdocs hooks (mkdocs.yml `hooks:`): the pages and pictures generated at build time, so they cannot go stale and
nothing generated is committed: the configuration and command references, and the gallery of real outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cli_reference
import config_reference
import gallery
from mkdocs.structure.files import File, Files

PAGES = {
    "reference/config.md": config_reference.markdown,
    "reference/cli.md": cli_reference.markdown,
    "gallery.md": gallery.markdown,
}


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages and the gallery's pictures to the site's files."""
    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    made = gallery.build()
    for picture in gallery.PICTURES:
        files.append(File.generated(config, f"assets/gallery/{picture.name}", abs_src_path=str(made / picture.source)))
    return files
