"""Type checks for environment keyword arguments. --env-kwargs arrives as JSON, so a value of the wrong type (a
string for a number, 60.5 for a length) would otherwise be accepted silently or fail deep inside an environment."""

import numbers

TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a JSON object"}


def check_type(owner: str, key: str, value, expected: type):
    """`value` if it has the `expected` type (int: an integer; float: any number; bool, list, dict: that type; a
    bool is not a number here); else ValueError "<owner>: <key> must be an integer (int), got 'abc' (str)"."""
    if expected in (int, float):
        ok = isinstance(value, numbers.Integral if expected is int else numbers.Real) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ValueError(f"{owner}: {key} must be {TYPE_NAMES[expected]} ({expected.__name__}), got {value!r} ({type(value).__name__})")
    return value
