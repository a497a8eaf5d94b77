"""Software releases: `kiln software` (build with zc.buildout) and `kiln instance` (run them).

The buildout recipes and the binary-cache extension the profiles under component/, stack/
and software/ use live in :mod:`kiln.buildout`.
"""
