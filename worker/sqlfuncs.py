"""The SQL functions live in the shared core (:mod:`qengine.sqlfuncs`): workers register them on
their lanes and the czar on its merge database, and the czar must not import the worker
package. This name stays for existing imports: it is the same module object."""
import sys

from qengine import sqlfuncs as _sqlfuncs

sys.modules[__name__] = _sqlfuncs
