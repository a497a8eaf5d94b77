"""Software releases: `kiln software` (build with zc.buildout) and `kiln instance` (run them).

The buildout recipes the profiles under software/ and stack/ use live in
:mod:`releases.recipes`.
"""
