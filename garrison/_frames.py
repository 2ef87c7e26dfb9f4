"""Which frames are the runtime's (garrison's, trio's) and which the user's code, and a
frame as a traceback prints it: what a warning or an error note shows of where the
user's code is (a blocked event loop, a workflow that took another path, a step that
runs on in a test)."""

from __future__ import annotations

import linecache
import os
from types import FrameType

import trio

#: garrison's folder and trio's: a frame of a file in them is the runtime's
GARRISON_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep
TRIO_DIR = os.path.dirname(os.path.realpath(trio.__file__)) + os.sep
RUNTIME_DIRS = (GARRISON_DIR, TRIO_DIR)


def is_runtime(filename: str) -> bool:
    """The file is garrison's or trio's (not the user's code)."""
    return os.path.realpath(filename).startswith(RUNTIME_DIRS)


def frame_text(frame: FrameType, line: int | None = None) -> str:
    """``frame`` (at ``line``, by default the one it runs) as a traceback prints it:
    ``File "...", line N, in fn`` and, indented below, its source line (when the file
    can be read)."""
    code = frame.f_code
    line = frame.f_lineno if line is None else line
    text = f'File "{code.co_filename}", line {line}, in {code.co_name}'
    source = linecache.getline(code.co_filename, line).strip()
    return f"{text}\n    {source}" if source else text


def _libraries() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple({os.path.realpath(paths[key]) + os.sep
                  for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
                 ) + RUNTIME_DIRS


#: the folders of code that is not the application's: Python's own library, installed
#: packages' (garrison and trio among them); read at the first question
LIBRARIES: tuple[str, ...] | None = None


def is_users(filename: str) -> bool:
    """The file is the application's own code: none of Python's own library, an
    installed package's, trio's or garrison's."""
    global LIBRARIES
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    if LIBRARIES is None:
        LIBRARIES = _libraries()
    return not os.path.realpath(filename).startswith(LIBRARIES)
