"""A module that raises a BaseException (not an Exception) at import."""


class Halt(BaseException):
    """Not an Exception."""


raise Halt("stop here")
