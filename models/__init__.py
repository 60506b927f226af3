"""Model manifests, the default taxonomy's trained artifacts and tagger versions.

This package holds data, not code: manifests (what to assemble from which installed package,
with checksums) are read with :func:`importlib.resources.files`.
"""
