"""Parameter constraints declared as data, checked with one message template (scikit-learn's wording).

    The 'n_clusters' parameter of KMeans must be an int in the range [1, inf). Got 0 instead.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Interval", "Options", "validate_params", "InvalidParameterError"]


class InvalidParameterError(ValueError, TypeError):
    """A constructor or function parameter does not satisfy its constraints.

    Both a ``ValueError`` and a ``TypeError``, as scikit-learn's ``InvalidParameterError``, so
    either ``except`` clause catches it.  Raised by :func:`validate_params`.
    """


class Interval:
    """Constraint: a number of a given kind in an interval, as scikit-learn's ``Interval``.

    Booleans and NaN never satisfy it; an ``int`` interval wants an integral value, a ``float``
    interval any real one (ints included).  ``str()`` gives the wording of the error message.

    Parameters
    ----------
    kind : type
        ``int`` or ``float``.
    left : int, float or None
        Lower bound (None: unbounded).
    right : int, float or None
        Upper bound (None: unbounded).
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds belong to the interval.

    Attributes
    ----------
    kind : type
        ``int`` or ``float``.
    left : int, float or None
        Lower bound.
    right : int, float or None
        Upper bound.
    closed : str
        Which bounds belong to the interval.

    Examples
    --------
    >>> from kmeans_dist.estimators.validation import Interval
    >>> c = Interval(int, 1, None, closed="left")
    >>> c.is_satisfied_by(3), c.is_satisfied_by(0), c.is_satisfied_by(True)
    (True, False, False)
    >>> str(c)
    'an int in the range [1, inf)'
    """

    def __init__(self, kind, left, right, closed="both"):
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, v) -> bool:
        """Whether ``v`` is of the interval's kind and lies in it.

        Parameters
        ----------
        v : object
            The value to check.

        Returns
        -------
        bool
            True when ``v`` satisfies the constraint.
        """
        if isinstance(v, bool):
            return False
        if self.kind is int and not isinstance(v, numbers.Integral):
            return False
        if self.kind is float and not isinstance(v, numbers.Real):
            return False
        if isinstance(v, float) and np.isnan(v):
            return False
        lo_ok = self.left is None or (v >= self.left if self.closed in ("left", "both") else v > self.left)
        hi_ok = self.right is None or (v <= self.right if self.closed in ("right", "both") else v < self.right)
        return lo_ok and hi_ok

    def __str__(self):
        kind = "an int" if self.kind is int else "a float"
        lb = "[" if self.closed in ("left", "both") else "("
        rb = "]" if self.closed in ("right", "both") else ")"
        lo = "-inf" if self.left is None else self.left
        hi = "inf" if self.right is None else self.right
        if self.left is None:
            lb = "("
        if self.right is None:
            rb = ")"
        return f"{kind} in the range {lb}{lo}, {hi}{rb}"


class Options:
    """Constraint: one of a fixed set of values of a given type, as scikit-learn's ``Options``.

    ``str()`` gives the wording of the error message.

    Parameters
    ----------
    kind : type
        Type the value must be an instance of (e.g. ``str``).
    options : iterable
        The allowed values.

    Attributes
    ----------
    kind : type
        Type the value must be an instance of.
    options : tuple
        The allowed values.

    Examples
    --------
    >>> from kmeans_dist.estimators.validation import Options
    >>> c = Options(str, {"lloyd"})
    >>> c.is_satisfied_by("lloyd"), c.is_satisfied_by("elkan")
    (True, False)
    >>> str(c)
    "a str among {'lloyd'}"
    """

    def __init__(self, kind, options):
        self.kind, self.options = kind, tuple(options)

    def is_satisfied_by(self, v) -> bool:
        """Whether ``v`` is an instance of ``kind`` and one of ``options``.

        Parameters
        ----------
        v : object
            The value to check.

        Returns
        -------
        bool
            True when ``v`` satisfies the constraint.
        """
        return isinstance(v, self.kind) and v in self.options

    def __str__(self):
        inner = ", ".join(repr(o) for o in self.options)
        return f"a {self.kind.__name__} among {{{inner}}}"


class _Const:
    def __init__(self, name, check):
        self.name, self.check = name, check

    def is_satisfied_by(self, v) -> bool:
        return self.check(v)

    def __str__(self):
        return self.name


def _is_array_like(v):
    return hasattr(v, "__array__") or hasattr(v, "shape") or isinstance(v, (list, tuple))


ARRAY_LIKE = _Const("an array-like", _is_array_like)
CALLABLE = _Const("a callable", callable)
NONE = _Const("None", lambda v: v is None)
BOOLEAN = _Const("an instance of 'bool'", lambda v: isinstance(v, (bool, np.bool_)))
RANDOM_STATE = _Const("an int in the range [0, 4294967295], an instance of 'numpy.random.RandomState', "
                      "an instance of 'numpy.random.Generator' or None",
                      lambda v: v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 2**32 - 1)
                      or isinstance(v, (np.random.RandomState, np.random.Generator)))
ANY = _Const("anything", lambda v: True)


def _join(cs):
    s = [str(c) for c in cs]
    return s[0] if len(s) == 1 else ", ".join(s[:-1]) + " or " + s[-1]


def validate_params(constraints: dict, params: dict, caller: str) -> None:
    """Raise :class:`InvalidParameterError` for the first parameter that satisfies none of its constraints.

    Parameters are checked in the order of ``constraints``; names absent from ``params`` are
    skipped.  The message follows scikit-learn's wording.

    Parameters
    ----------
    constraints : dict
        Parameter name -> list of constraints (:class:`Interval`, :class:`Options`, ...); a
        value is valid when it satisfies any of them.
    params : dict
        Parameter name -> value.
    caller : str
        Name of the estimator or function, used in the message.

    Raises
    ------
    InvalidParameterError
        For the first parameter whose value satisfies none of its constraints.

    Examples
    --------
    >>> from kmeans_dist.estimators.validation import Interval, validate_params
    >>> validate_params({"n_clusters": [Interval(int, 1, None, closed="left")]},
    ...                 {"n_clusters": 0}, "KMeans")
    Traceback (most recent call last):
        ...
    kmeans_dist.estimators.validation.InvalidParameterError: The 'n_clusters' parameter of KMeans must be an int in the range [1, inf). Got 0 instead.
    """
    for name, cons in constraints.items():
        if name not in params:
            continue
        v = params[name]
        if any(c.is_satisfied_by(v) for c in cons):
            continue
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be {_join(cons)}. Got {v!r} instead."
        )
