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


def frame_text(frame: FrameType) -> str:
    """``frame`` as a traceback prints it: ``File "...", line N, in fn`` and, indented
    below, its source line (when the file can be read)."""
    code = frame.f_code
    text = f'File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}'
    source = linecache.getline(code.co_filename, frame.f_lineno).strip()
    return f"{text}\n    {source}" if source else text
