"""minillm: the package the minillm course builds, one concept per module.

Chapter by chapter the course adds modules here; `book/intro.md` has the map of which chapter adds
which module. Nothing is imported eagerly beyond the version, so `import minillm` stays fast.
"""

__version__ = "0.1.0"
