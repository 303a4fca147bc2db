"""Test helpers: plain modules that tests import (conftests only hold fixtures and import from here).

`backbones` registers the test backbones on import; tests/conftest.py imports it, and a subprocess that needs
them runs `import tests.helpers.backbones` first.
"""
