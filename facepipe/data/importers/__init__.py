"""Dataset importers: each module reads one release layout and yields Items for the common layout."""
from __future__ import annotations

import importlib

from facepipe.data.importers.common import ImportConfig, run_import
from facepipe.util.errors import FacepipeError
from facepipe.util.progress import SILENT

# format name -> module under facepipe.data.importers
FORMATS = {
    "fasseg": "fasseg",
    "helen": "helen",
    "lfw-pl": "lfw_pl",
    "celebamask-hq": "celebamask_hq",
    "lapa": "lapa",
    "folder": "folder",
}


def get_format(name: str):
    if name not in FORMATS:
        raise FacepipeError(f"unknown format {name!r}; known: {', '.join(FORMATS)}.")
    return importlib.import_module(f"facepipe.data.importers.{FORMATS[name]}")


def import_dataset(fmt: str, src, out, reporter=None, **kw):
    """Import SRC of format `fmt` into OUT (the common layout). Returns the manifest."""
    mod = get_format(fmt)
    cfg = ImportConfig(format=fmt, src=str(src), out=str(out), **kw)
    if hasattr(mod, "schema_for"):
        schema = mod.schema_for(src)
    else:
        schema = mod.SCHEMA
    return run_import(cfg, mod.items(src), schema, reporter or SILENT)
