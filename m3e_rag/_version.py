"""The one place the package's version is written (pyproject.toml reads it: ``[tool.hatch.version]``)."""

__version__ = "0.1.0"
