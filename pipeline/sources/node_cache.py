"""Is a downloaded file this node's own copy? (A survey's detect task asks before it re-fetches.)

A fetch record names files by absolute path. A user's file (``local-dir:``, ``py:``) is usable
wherever that path exists. A *download* (a Hugging Face hub cache snapshot, a torch hub checkpoint)
is usable on a node only when it lies in that node's own cache (``HF_HOME`` / ``HF_HUB_CACHE``,
``TORCH_HOME``): nodes configured with different caches do not share downloads, even when one can
read the other's path (one machine running several Ray nodes, a home directory on NFS). Nodes
that should share downloads point their cache variables at the same shared folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_download(path: str | Path) -> bool:
    """True for a file in a hub cache layout (``models--*/snapshots/``) or torch's ``hub/checkpoints/``."""
    parts = Path(path).parts
    in_hub_cache = "snapshots" in parts and any(p.startswith("models--") for p in parts)
    return in_hub_cache or parts[-3:-1] == ("hub", "checkpoints")


def node_caches() -> list[Path]:
    """This process's download caches, read from the environment at call time."""
    from pipeline.sources.hub_download import hub_cache_dir
    from pipeline.sources.urlfetch import torch_checkpoint_dir

    return [hub_cache_dir(), torch_checkpoint_dir()]


def usable_on_this_node(path: str | Path) -> bool:
    """The file exists here and, when it is a download, lies in this node's own cache."""
    if not Path(path).is_file():
        return False
    if not is_download(path):
        return True
    here = Path(os.path.abspath(path))
    return any(here.is_relative_to(os.path.abspath(cache)) for cache in node_caches())
