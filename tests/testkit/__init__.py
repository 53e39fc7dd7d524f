"""Helpers shared by the tests: fakes for the app's seams, request builders, production wiring with seams, log capture.

``tests/`` is on pytest's ``pythonpath`` (pyproject.toml), so tests import
``testkit.<module>``. The test folders themselves are not packages: the name
``tests`` belongs to a package that ``azure-functions-runtime-v1`` installs.
"""
