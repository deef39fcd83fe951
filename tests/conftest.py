"""Shared pytest set-up: make the checkout importable as ansible_collections.xdplb.katran.

Tests import the engine the way modules do, so a relative import that only works from one
place fails here first.
"""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_COLLECTIONS_ROOT = os.path.join(REPO_ROOT, ".build", "collections")
_LINK = os.path.join(_COLLECTIONS_ROOT, "ansible_collections", "xdplb", "katran")


def _ensure_collection_link():
    if not os.path.islink(_LINK):
        os.makedirs(os.path.dirname(_LINK), exist_ok=True)
        try:
            os.symlink(REPO_ROOT, _LINK)
        except FileExistsError:
            pass
    if _COLLECTIONS_ROOT not in sys.path:
        sys.path.insert(0, _COLLECTIONS_ROOT)


_ensure_collection_link()
