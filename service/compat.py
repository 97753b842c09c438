"""The one compatibility layer that lets hug 2.6.1 import on Python 3.11-3.13, NumPy 1.x and 2.x.

hug 2.6.1 (its last release, 2020) pins falcon 2.0.0; neither follows what Python and NumPy
have removed since:

- NumPy 2.0 removed the ``numpy.unicode_`` alias; ``hug/output_format.py`` names it at import
  time (``@json_convert(str, numpy.unicode_)``), so ``import hug`` fails with AttributeError.
- Python 3.12 removed distutils; hug imports ``distutils.util.strtobool`` (``hug/api.py``) and
  ``distutils.version.LooseVersion`` (``hug/types.py``). setuptools provides a ``distutils``
  shim; the ``serve`` extra installs setuptools on 3.12+.
- Python 3.13 removed cgi; hug (``hug/format.py``, ``hug/input_format.py``) and falcon 2.0
  (its vendored ``mimeparse``, imported by ``falcon.request``) import it. The ``legacy-cgi``
  package provides it; the ``serve`` extra installs it on 3.13+.

Every other service module gets hug and falcon from here (``from service.compat import
falcon, hug``, or ``import_hug()``); nothing else patches anything.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import numpy

# (module, names hug imports from it, the package that provides it when Python lacks it).
_REQUIRED = (
    ("distutils.util", ("strtobool",), "setuptools"),
    ("distutils.version", ("LooseVersion",), "setuptools"),
    ("cgi", ("parse_header", "parse_multipart"), "legacy-cgi"),
)

# DeprecationWarnings that importing hug triggers on Python 3.11/3.12 because of the stdlib
# modules above (distutils only where the stdlib copy is used, not setuptools' shim). They say
# what this module already handles, so they are ignored while hug is imported, and only then:
# the filters are restored afterwards, and every other warning still shows.
_IMPORT_DEPRECATIONS = (
    r"'cgi' is deprecated and slated for removal",
    r"The distutils package is deprecated and slated for removal",
)


def alias_numpy_unicode(np: ModuleType = numpy) -> None:
    """Restore ``np.unicode_`` as ``np.str_`` where NumPy 2 removed it; leave NumPy 1.x alone.

    This is the minimum hug needs from NumPy: the other NumPy names hug uses (``ndarray``,
    ``bytes_``, ``bool_``, ``integer``, ``floating``) still exist in NumPy 2, and in NumPy 1.x
    ``unicode_`` *is* ``str_``, so the alias means exactly what hug expects (its JSON output
    turns NumPy strings into ``str``). The alias stays for the life of the process; code that
    reads ``unicode_`` sees what NumPy 1.x gave it.
    """
    if not hasattr(np, "unicode_"):  # NumPy 2 raises AttributeError from its __getattr__
        np.unicode_ = np.str_


def _require(module: str, names: tuple[str, ...], package: str) -> None:
    """Import ``module`` and check ``names`` in it, or say which package to install."""
    try:
        found = importlib.import_module(module)
        missing = [name for name in names if not hasattr(found, name)]
    except ImportError as exc:
        raise ImportError(_missing_message(module, package)) from exc
    if missing:
        raise ImportError(_missing_message(f"{module}.{', '.join(missing)}", package))


def _missing_message(what: str, package: str) -> str:
    message = (
        f"hug (the HTTP framework of rul's service) needs {what}, which this Python does not "
        f"provide; install the '{package}' package (pip install 'rul[serve]' does)"
    )
    if package == "setuptools":
        message += ", with SETUPTOOLS_USE_DISTUTILS unset or 'local'"
    return message


def import_hug() -> ModuleType:
    """Import hug with the fixes above in place and return it (cheap after the first call)."""
    alias_numpy_unicode()
    with warnings.catch_warnings():
        for message in _IMPORT_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        for module, names, package in _REQUIRED:
            _require(module, names, package)
        return importlib.import_module("hug")


hug = import_hug()
# falcon is imported by hug above, so with the same fixes in place; take it from here too.
falcon = importlib.import_module("falcon")
