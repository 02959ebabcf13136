"""``BenchError``: the one base of the project's errors about bad input (a file, a field, a value, a busy folder or
GPU), whose message is the whole story: each names what is wrong, the value and what was expected. The command
line's boundary (bench/boundary.py) prints such an error as one line and exits 2; anything else is a bug.

bench's own error types derive from it. The packages below bench (``data``, ``models``, ``strategies``) import
nothing of bench (README, "Architecture"), so their error types cannot; each declares itself instead with the class
attribute ``bad_input = True``, and ``BenchError`` counts every class that does as one of its own
(``__subclasshook__``, the way ``collections.abc.Sized`` counts every class with ``__len__``). ``isinstance`` and
``issubclass`` therefore answer for all of them; an ``except BenchError`` clause does not (Python's ``except``
matches real bases only), which is why the boundary catches everything and asks ``isinstance``.

This module imports nothing of the project, so every room of bench may use it.
"""
from __future__ import annotations

from abc import ABCMeta

MARK = "bad_input"  # class attribute by which an error type below bench declares itself a BenchError


class BenchError(Exception, metaclass=ABCMeta):
    """Bad input the user can fix; the message says what and how (one line, exit 2 at the command line)."""

    @classmethod
    def __subclasshook__(cls, other: type):
        if cls is BenchError and any(vars(base).get(MARK) is True for base in other.__mro__):
            return True
        return NotImplemented
