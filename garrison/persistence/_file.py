"""The SQLite store's file on disk: its lock, its creation, and the checks that refuse
a file which is not (or is no longer) a garrison store.

Every problem found here is a :class:`~garrison.StoreError` naming the store and what
is wrong (or :class:`~garrison.StoreLocked`); a raw ``sqlite3`` or ``OSError`` never
leaves the opening of a store.

The lock
--------
A node takes an exclusive ``flock`` on ``<resolved path>.lock``: the path with every
symlink and ``..`` resolved (``os.path.realpath``), so a symlink to the store, or the
same file reached from another directory, meets the same lock. (A hard link under
another name is not detected: it is a second name of the same inode, not a path to
resolve.)

Why a lock file beside the store rather than ``flock`` on the database file itself:
SQLite locks the database and its ``-shm`` with POSIX ``fcntl`` locks. On Linux
``flock`` and ``fcntl`` locks are independent, but on the BSDs and macOS they are one
lock table (an exclusive ``flock`` on the database would block the shared locks every
reader, tools included, takes), and on NFS Linux emulates ``flock`` with a whole-file
``fcntl`` lock, which SQLite's own ``close()`` of the same file in this process would
silently drop (closing any descriptor releases a process's ``fcntl`` locks on that
file). A file SQLite never opens keeps our lock apart from SQLite's locking on every
platform, in WAL mode and out of it.

Creation
--------
A new store is built complete (schema, WAL mode) under ``<resolved path>.new`` and
then hard-linked into place, so the path never holds a half-made store: a zero-length
file at a store's path is always damage (a truncation, or not a garrison store) and is
refused rather than silently started over. The files are created with ``mode``
(default ``0o600``: the journal holds payloads) whatever the umask; SQLite gives the
``-wal`` and ``-shm`` files the mode of the database file.

The doorbell
------------
Tools (stores opened with ``lock=False``) write for the node in the store and leave
a wakeup row; SQLite has no notification between processes. The node makes a FIFO at
``<resolved path>.wake``, keeps it open while it runs, and waits on it in a worker
thread (blocked in ``poll``, holding no GIL); a tool writes a byte into it after each
commit. So a tool's write
reaches the node at once, and the node's watcher wakes only when rung, instead of
polling the table every few milliseconds from a thread that takes the GIL from the
event loop at each poll. Ringing never blocks and never fails the tool: no node
running (no reader), no doorbell (another system, or something else at its name),
a full pipe (a ring is waiting already) all leave the node to find the row by itself
(it looks once a second anyway, for a writer that rings no bell).

In memory
---------
An in-memory store (``SQLiteStore()``) is a SQLite file too, in a folder of its own in
the temp folder, removed when the store closes. A killed process cannot remove it, so
the folder holds a lock (an ``flock`` on its ``owner.lock``, taken before that name
exists) for as long as the store is open, and the first in-memory store a process
opens removes every such folder of the same user whose lock is free: its owner is gone,
whatever the process ids of another container sharing the temp folder say.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import shutil
import sqlite3
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator

from .._errors import StoreError, StoreLocked

__all__ = [
    "DEFAULT_MODE",
    "STRAY_AT",
    "FileIdentity",
    "cannot_create_in",
    "check_identity",
    "check_mode",
    "create",
    "doorbell_file",
    "drain_doorbell",
    "existing",
    "identity",
    "keyword_dsn",
    "make_doorbell",
    "mask_password",
    "open_doorbell",
    "probe",
    "remove_doorbell",
    "ring_doorbell",
    "store_error",
    "stray_at",
    "take_lock",
    "url_servers",
    "wait_rung",
]

#: the mode of a new store's files: owner only, the journal holds payloads
DEFAULT_MODE = 0o600

#: ``(st_dev, st_ino)`` of a file
FileIdentity = tuple[int, int]


def check_mode(mode: object) -> int:
    """``mode`` if it is permission bits (``0`` to ``0o777``), else ``ValueError``."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ValueError(
            f"invalid file mode {mode!r}: expected permission bits such as 0o600 "
            "(owner only, the default) or 0o640 (owner and group may read)"
        )
    return mode


def _open_new_or_existing(name: str, mode: int) -> int:
    """Open ``name`` read-write; if this call creates it, give it exactly ``mode``."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(name, flags)
    try:
        os.fchmod(fd, mode)  # the umask took bits away from ``mode``
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_file(path: str) -> str:
    """The lock file of the store at ``path``: beside its resolved path."""
    return os.path.realpath(path) + ".lock"


def doorbell_file(path: str) -> str:
    """The doorbell of the store at ``path``: a FIFO beside its resolved path."""
    return os.path.realpath(path) + ".wake"


def make_doorbell(path: str, file: str) -> tuple[str, int] | None:
    """The node's doorbell (see the module docs), made if missing with the mode of the
    database ``file`` (as SQLite gives its ``-wal`` and ``-shm``: whoever may write the
    store may ring), or the one a node that died left: its file name and the node's
    end of it (:func:`open_doorbell`), or ``None`` where there can be none (no FIFOs
    here, no permission, something else at its name), and the node polls."""
    name = doorbell_file(path)
    mkfifo = getattr(os, "mkfifo", None)
    if mkfifo is None:  # pragma: no cover - no FIFOs on this system
        return None
    try:
        mode = stat.S_IMODE(os.stat(file).st_mode)
        mkfifo(name, mode)
    except FileExistsError:
        pass  # a node killed left it
    except OSError:
        return None
    fd = open_doorbell(name)
    if fd is None:
        return None
    with contextlib.suppress(OSError):
        # the umask took bits away from ``mode``, or the store's mode changed since a
        # node that died made it (not ours to change: it still rings for the owner)
        os.fchmod(fd, mode)
    return name, fd


def open_doorbell(name: str) -> int | None:
    """A descriptor waiting on the doorbell ``name`` (non-blocking; open for writing
    too, so that it never reads as closed when a tool's end closes), or ``None`` if
    ``name`` is not a FIFO (any more)."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    if not _is_fifo(fd):
        os.close(fd)
        return None
    return fd


def ring_doorbell(name: str) -> None:
    """Tell the node waiting on the doorbell ``name`` (:func:`doorbell_file`) that a
    tool wrote for it: a byte into it. Never blocks, never raises: without a node, a
    doorbell or room in it, the node finds the write by itself."""
    try:
        fd = os.open(name,
                     os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # ENXIO: no node has it open; ENOENT: none made
        return
    try:
        if _is_fifo(fd):
            os.write(fd, b"\0")
    except OSError:  # EAGAIN: full, a ring is waiting already
        pass
    finally:
        os.close(fd)


def wait_rung(fd: int, timeout: float) -> None:
    """Wait until the doorbell ``fd`` is rung, for ``timeout`` seconds at most. (``poll``,
    not ``select``: a node with a thousand sockets open has descriptors past
    ``select``'s limit.)"""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll(timeout * 1000)


def drain_doorbell(fd: int) -> None:
    """Read every ring waiting in the doorbell ``fd`` (non-blocking)."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:  # BlockingIOError: empty
        pass


def remove_doorbell(name: str) -> None:
    """Remove the node's doorbell as it closes (a FIFO only: never another file)."""
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.lstat(name).st_mode):
            os.unlink(name)


def _is_fifo(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:  # pragma: no cover - a descriptor just opened
        return False


def take_lock(path: str, mode: int) -> tuple[int, str]:
    """Take the node's lock of the store at ``path``: ``(fd, lock file)``.

    :class:`~garrison.StoreLocked` if another opener holds it (in this process or
    another); :class:`~garrison.StoreError` if the lock file cannot be created.
    """
    name = lock_file(path)
    for attempt in range(_RELOCKS):
        try:
            fd = _open_new_or_existing(name, mode)
        except OSError as exc:
            folder = os.path.dirname(name)
            if isinstance(exc, FileNotFoundError) and folder and not os.path.isdir(folder):
                raise StoreError(path, f"its folder {folder!r} does not exist (a node "
                                       "creates the store's file, not its folder)") from None
            raise StoreError(
                path, f"cannot open its lock file {name!r}: {_reason(exc)}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the lock of the file at the lock's name: an open that failed removes the
            # lock file it made (with its lock held), and one opened just before that is
            # no one's lock any more: taken again on the file that name reaches now
            named = _named(fd, name)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(path, name) from None
        except BaseException:
            os.close(fd)
            raise
        if named or attempt == _RELOCKS - 1:
            return fd, name  # (the last try keeps it: a file system whose inodes move)
        os.close(fd)
    raise AssertionError("unreachable")  # pragma: no cover


#: the times a lock taken on a lock file removed meanwhile is taken again
_RELOCKS = 10


def _named(fd: int, name: str) -> bool:
    """Whether the file open as ``fd`` is the one at ``name`` now (not deleted, nor
    replaced by another file of that name)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(name))
    except FileNotFoundError:
        return False


def lock_held(path: str) -> bool:
    """Whether a node holds the lock of the store at ``path`` now (a tool deciding
    whether to ask the node or act itself). Unknown counts as held."""
    with lock_if_free(path) as free:
        return not free


@contextlib.contextmanager
def lock_if_free(path: str) -> Iterator[bool]:
    """Hold the node's lock of the store at ``path`` for the block if no node holds it
    (True: no node opens the store, and reads it, until the block ends); False if one
    does, or it is unknown. A store no node ever opened here (no lock file) is free:
    nothing is created (the lock file a node makes has the node's owner and mode)."""
    name = lock_file(path)
    try:
        fd = os.open(name, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # (BlockingIOError: held)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def existing(file: str, path: str | None) -> bool:
    """Whether a store file is at ``file``; refuses what cannot be one.

    ``False`` if nothing is there. :class:`~garrison.StoreError` for a directory or
    other non-file, and for an empty file: garrison never leaves one at a store's
    path (see :func:`create`), so it is a truncated store or somebody else's file,
    and starting a new store over it would hide that the data is gone.
    """
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(path, f"cannot read the file: {_reason(exc)}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(path, "not a regular file, so not a garrison store")
    if st.st_size == 0:
        raise StoreError(
            path,
            "the file is empty (0 bytes): the store was truncated, or this is not a "
            "garrison store. garrison does not start a new store over it; restore the "
            "store from a backup, or move the file away to start a new one",
        )
    if st.st_nlink > 1:
        _one_name(file, path, st.st_nlink)
    return True


def _drop_creation_leftovers(file: str) -> bool:
    """Remove the names a creation of the store at ``file`` linked it from and did not
    remove, having crashed in between (``<file>.new``, ``.<name>.<hex>.new`` beside it),
    when they are the same file; True if one was."""
    real = os.path.realpath(file)
    folder, base = os.path.split(real)
    try:
        st = os.stat(real)
        hidden = [os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith(f".{base}.") and n.endswith(".new")]
    except OSError:
        return False
    dropped = False
    for name in [real + ".new", *hidden]:
        try:
            if os.path.samestat(os.stat(name), st):
                os.unlink(name)
                dropped = True
        except OSError:
            continue
    return dropped


def _one_name(file: str, path: str | None, names: int) -> None:
    """Refuse a store file with ``names`` names (hard links): its lock file, -wal and
    -shm are per name, so a node on each name would both run its workflows, and two
    write-ahead logs of one file corrupt it. (A store being created is linked into
    place from a file beside it and that name removed at once: looked at again a few
    times before it is refused.)"""
    for _ in range(10):
        time.sleep(0.02)
        try:
            names = os.stat(file).st_nlink
        except OSError:
            return  # (gone meanwhile: what opens it next finds that)
        if names <= 1:
            return
    if _drop_creation_leftovers(file) and os.stat(file).st_nlink <= 1:
        return
    raise StoreError(path, f"the file has {names} names (hard links): SQLite keeps a "
                           "write-ahead log and a lock beside each name, so two names of one "
                           "store, written at once, corrupt it; keep one name (remove the "
                           "other links; a symbolic link is fine)")


#: the first 16 bytes of every SQLite database file
SQLITE_HEADER = b"SQLite format 3\x00"


#: a libpq keyword string (``host=db user=app password=...``), given where a store's
#: file path or postgresql:// URL goes
_KEYWORD_DSN = re.compile(r"\s*(?:\w+\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S*)\s*)+")
_LIBPQ_KEYS = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|password|port|sslmode|"
                         r"service)\s*=", re.IGNORECASE)
_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)


def mask_password(text: str) -> str:
    """``text`` (a libpq keyword string) with the value of its ``password=`` masked."""
    return _PASSWORD.sub(r"\1***", text)


#: what :func:`stray_at` finds, said without the password
STRAY_AT = ("the URL has an '@' after its host part: a '/', '?' or '#' in the password must "
            "be percent-encoded (%2F, %3F, %23), an '@' in the database name as %40")


def stray_at(url: str) -> int:
    """Where (an index of ``url``, a postgresql:// URL) the '@' ending a password cut
    short lies, or -1. A '/', '?' or '#' in a password ends the host part early
    (``app:pa/ss@host``): urllib and libpq read a piece of the password as the host or
    port. So the host part has no '@', and one follows: in the path (a database name
    rarely has one), the fragment, a query parameter's name, anywhere when the host
    part ends in a port that is no number (``app:pa``), or before any '/' (libpq reads
    all up to an '@' that comes before a '/' as the user and password: ``app:12?s=3@``
    is no port and query). One in a query parameter's value after the path
    (``/orders?user=app@server``) is as written."""
    start = url.index("//") + 2
    end = min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))
    netloc, after = url[start:end], url[end:]
    at = after.find("@")
    if at < 0 or "@" in netloc:
        return -1
    rest, _, fragment = after.partition("#")
    path, _, query = rest.partition("?")
    # (each host's port: libpq's multi-host form, ``host1:port1,host2:port2``)
    ports = [server.rpartition(":")[2] if ":" in server and not server.endswith("]")
             else "0" for server in netloc.split(",")]
    names = [item.partition("=")[0] for item in query.split("&")]
    stray = ("@" in path or "@" in fragment or not all(port.isdigit() for port in ports)
             or any("@" in name for name in names) or "/" not in after[:at])
    return end + at if stray else -1


def url_servers(url: str) -> list[tuple[str | None, int | None]]:
    """The servers a postgresql:// URL names in its host part, ``(host, port)`` each
    (``None`` where it names none; the host in lower case): one, or several in libpq's
    multi-host form (``host1:port1,host2:port2``: a failover setup), which urllib takes
    for one host whose port is ``port1,host2:port2``. ``ValueError``, as urllib says
    it, for a port that is no number."""
    hosts = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    servers: list[tuple[str | None, int | None]] = []
    for server in hosts.split(","):
        parts = urllib.parse.urlsplit("//" + server)
        servers.append((parts.hostname, parts.port))
    return servers


def keyword_dsn(spec: object) -> str | None:
    """If ``spec`` (a store given as text) is a libpq keyword string rather than a file
    path, the error that says so, its password masked (taken as a file path, it would
    make a SQLite file named after it, password and all); else ``None``."""
    if not isinstance(spec, str) or not _LIBPQ_KEYS.search(spec) \
            or not _KEYWORD_DSN.fullmatch(spec):
        return None
    return (f"store {mask_password(spec)!r} is a libpq keyword string, not a file path: write a "
            "PostgreSQL store as a URL, postgresql://user:password@host:port/dbname")


def probe(file: str, path: str | None) -> bool:
    """What a node needs of the file system to open the store at ``file``, checked
    without creating anything (``garrison check``): whether a store is there
    (:func:`existing`); if so, that it is a SQLite database the node can open for
    writing; and that files can be created in its folder (a new store, its lock file,
    SQLite's ``-wal`` and ``-shm``). :class:`~garrison.StoreError` saying what is
    wrong; ``True`` if a store file is there, ``False`` if a node would create one."""
    there = existing(file, path)
    if there:
        try:
            fd = os.open(file, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(path, "cannot use the file: it cannot be opened for writing: "
                                   f"{_reason(exc)}") from exc
        try:
            header = os.pread(fd, len(SQLITE_HEADER), 0)
        except OSError as exc:
            raise StoreError(path, f"cannot read the file: {_reason(exc)}") from exc
        finally:
            os.close(fd)
        if header != SQLITE_HEADER:
            raise StoreError(path, "not a SQLite database, so not a garrison store (its "
                                   "first bytes are not SQLite's)")
    directory = os.path.dirname(os.path.realpath(file))
    why = cannot_create_in(directory)
    if why is not None:
        raise StoreError(path, f"cannot create files in {directory!r} (a node creates "
                               f"{'' if there else 'the store, '}its lock file and SQLite's "
                               f"-wal and -shm files there): {why}")
    return there


def cannot_create_in(directory: str) -> str | None:
    """Why no file can be created in ``directory`` (``None``: one can), found by making
    an unnamed file there (``O_TMPFILE``, gone when closed: nothing appears), or, on a
    file system without those, a named one removed at once. Permission bits alone do
    not tell (root passes them, and ``/proc`` holds no files)."""
    unnamed = getattr(os, "O_TMPFILE", 0)
    if unnamed:
        try:
            os.close(os.open(directory, unnamed | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            return None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return _reason(exc)
    try:
        fd, name = tempfile.mkstemp(prefix=".garrison-check-", dir=directory)
    except OSError as exc:
        return _reason(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def create(file: str, path: str | None, mode: int, build: Callable[[str], None]) -> None:
    """Create a new store at ``file`` with ``build(temporary_file)`` and link it into place.

    The caller holds the store's lock (or owns the directory), so it is the only one
    creating this store: a ``.new`` file left by a creation that crashed is removed.
    """
    real = os.path.realpath(file)
    new = real + ".new"
    _remove_database(new)
    try:
        try:
            os.close(_open_new_or_existing(new, mode))
        except OSError as exc:
            raise StoreError(path, f"cannot create {new!r}: {_reason(exc)}") from exc
        build(new)  # closes its connection: the file is complete and has no -wal
        try:
            os.link(new, real)
        except FileExistsError:
            pass  # made meanwhile by somebody else: it is checked like any existing file
        except OSError:  # a file system without hard links
            if not os.path.exists(real):
                os.rename(new, real)
        _remove_database(new)  # (before the sync: the store has two names meanwhile)
        _sync_directory(os.path.dirname(real))
    except OSError as exc:
        raise StoreError(path, f"cannot create {real!r}: {_reason(exc)}") from exc
    finally:
        _remove_database(new)


def _remove_database(file: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file + suffix)


def _sync_directory(directory: str) -> None:
    """Make a new directory entry durable (a store created just before a power loss)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # pragma: no cover - a directory we cannot open for reading
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that cannot sync directories
        pass
    finally:
        os.close(fd)


def identity(file: str, path: str | None) -> FileIdentity:
    """``(st_dev, st_ino)`` of the file at ``file`` now (what :func:`check_identity`
    compares with)."""
    try:
        st = os.stat(file)
    except OSError as exc:
        raise StoreError(
            path, f"the file went away while it was being opened: {_reason(exc)}"
        ) from exc
    return st.st_dev, st.st_ino


def check_identity(
    file: str,
    path: str | None,
    opened: FileIdentity,
    lock_fd: int | None,
    lock_file: str | None,
    *,
    tool: bool = False,
) -> None:
    """:class:`~garrison.StoreError` if ``file`` is not the file opened as ``opened``
    (deleted, replaced, truncated), or the lock file was deleted or replaced. ``tool``:
    the store was opened with ``lock=False`` (the message says so, not "the node")."""
    try:
        st = os.stat(file)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StoreError(path, f"cannot check the file: {_reason(exc)}") from exc
    if tool and (st is None or (st.st_dev, st.st_ino) != opened or st.st_size == 0):
        raise StoreError(
            path,
            "the file was deleted or replaced since this tool opened it (lock=False), so "
            "it is no longer the store at that path: nothing more is read or written "
            "through it. Open the store again (restart garrison ui)",
        )
    if st is None or (st.st_dev, st.st_ino) != opened:
        raise StoreError(
            path,
            "the file was deleted or replaced while the node ran: what the node wrote "
            "since then is not in the file at that path. Stop the node and restore the "
            "store from a backup",
        )
    if st.st_size == 0:
        raise StoreError(
            path,
            "the file was truncated to 0 bytes while the node ran. Stop the node and "
            "restore the store from a backup",
        )
    if lock_fd is not None and lock_file is not None and not _named(lock_fd, lock_file):
        raise StoreError(
            path,
            f"its lock file {lock_file!r} was deleted or replaced while the node ran: "
            "another node could now open the store too. Stop the node (and any other "
            "node on this store) and start one again",
        )


def store_error(
    path: str | None, file: str, exc: sqlite3.Error, busy_timeout: float,
    readonly: bool = False,
) -> StoreError:
    """The :class:`~garrison.StoreError` that says what a SQLite error at open means
    (``readonly``: of an open to read only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    said = f"({exc})"
    if code == sqlite3.SQLITE_READONLY_DBMOVED:
        what = f"the file was deleted or moved while it was being opened {said}"
    elif primary == sqlite3.SQLITE_NOTADB:
        what = f"not a SQLite database, so not a garrison store {said}"
    elif primary == sqlite3.SQLITE_CORRUPT:
        what = (f"the store is damaged {said}: it was truncated or overwritten; restore "
                "the store from a backup")
    elif primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        what = ("the file stayed locked by another connection for more than the "
                f"busy timeout ({busy_timeout:g}s) {said}")
    elif primary == sqlite3.SQLITE_FULL:
        what = f"the disk is full {said}"
    elif primary == sqlite3.SQLITE_IOERR and (free := _free_bytes(file)) is not None \
            and free < _FULL_BELOW:  # (SQLite says no more when its -shm cannot grow)
        what = f"the disk is full ({exc}; {free} bytes free on its file system)"
    elif primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM,
                     sqlite3.SQLITE_IOERR, sqlite3.SQLITE_AUTH):
        what = f"cannot use the file {said}"
        reason = _os_reason(file, readonly)
        if reason:
            what += f": {reason}"
    else:
        what = f"SQLite error {said}"
    return StoreError(path, what)


#: free bytes below which a file system is taken as full (SQLite grows its -shm file by
#: 32 KiB, and its write-ahead log by a page and its header at a time)
_FULL_BELOW = 64 * 1024


def _free_bytes(file: str) -> int | None:
    """The bytes this process may still write on the file system of ``file`` (the
    blocks kept for root count for root), or ``None`` if that cannot be told."""
    try:
        st = os.statvfs(os.path.dirname(os.path.realpath(file)))  # (where its -shm is)
    except OSError:
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def read_only_fs(file: str) -> bool:
    """Whether the folder of ``file`` is on a file system mounted read-only (a backup on
    a read-only mount): SQLite can make no ``-wal`` or ``-shm`` file there, and no
    node can write the store."""
    try:
        st = os.statvfs(os.path.dirname(os.path.realpath(file)))
    except OSError:
        return False
    return bool(st.f_flag & os.ST_RDONLY)


def _os_reason(file: str, readonly: bool = False) -> str | None:
    """Why the operating system refuses the store (SQLite's messages do not say);
    ``readonly``: it was opened to be read only."""
    try:
        os.close(os.open(file, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC))
    except OSError as exc:
        return f"it cannot be opened for {'reading' if readonly else 'writing'}: {_reason(exc)}"
    if not readonly and (beside := _unwritable_beside(file)):
        return beside
    directory = os.path.dirname(os.path.abspath(file))
    if not os.access(directory, os.W_OK):
        return (f"cannot create files in {directory!r} (SQLite keeps its -wal and -shm "
                "files beside the store, even to read it)")
    return None


def _unwritable_beside(file: str) -> str | None:
    """Which of SQLite's ``-wal`` and ``-shm`` files beside the store ``file`` this
    process may not write, said for the operator; ``None``: none. Asked with
    ``access``, never by opening one: closing a descriptor of a file drops every
    ``fcntl`` lock this process holds on it, SQLite's on a ``-shm`` too."""
    effective = os.access in os.supports_effective_ids
    refused = [suffix for suffix in ("-wal", "-shm") if os.path.exists(file + suffix)
               and not os.access(file + suffix, os.W_OK, effective_ids=effective)]
    if not refused:
        return None
    files = " and ".join(f"{suffix} file {file + suffix!r}" for suffix in refused)
    # (a -wal is never to be removed: it may hold transactions not yet in the store)
    remove = ", or remove it" if refused == ["-shm"] else ""
    them, are = ("them", "are") if len(refused) > 1 else ("it", "is")
    return (f"its {files} {are} not writable for this process (SQLite makes {them} "
            "with the store file's mode, for whoever opens the store first: a reader "
            f"that may not write the store left {them} so; with nothing open on the "
            f"store, give {them} the owner and mode of the store's file{remove})")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


#: the name an in-memory store's folder starts with, in the temp folder
SCRATCH_PREFIX = "garrison-store-"
_OWNER = "owner.lock"
#: whether this process has looked for folders left by killed processes yet
_swept = False


def scratch_folder() -> tuple[str, int]:
    """A new folder for an in-memory store's file: ``(folder, fd)``, where ``fd`` holds
    the folder's lock until it is closed (after the folder is removed). The first call
    in a process first removes the folders that killed processes left."""
    global _swept
    if not _swept:
        _swept = True
        sweep_scratch_folders()
    folder = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    try:
        # locked under another name, then renamed: a sweep never finds the lock free
        # between its creation and our flock
        new = os.path.join(folder, _OWNER + ".new")
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # (a file system without flock: no lock, and no sweep can take one either)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(new, os.path.join(folder, _OWNER))
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, fd


def sweep_scratch_folders() -> int:
    """Remove the in-memory stores' folders of this user whose lock is free (their
    process was killed with the store open); how many. Never raises: a folder that
    cannot be checked or removed stays."""
    removed = 0
    uid = os.geteuid()
    try:
        with os.scandir(tempfile.gettempdir()) as it:
            entries = [e for e in it if e.name.startswith(SCRATCH_PREFIX)]
    except OSError:
        return 0
    for entry in entries:
        try:
            if (not entry.is_dir(follow_symlinks=False)
                    or entry.stat(follow_symlinks=False).st_uid != uid):
                continue
            fd = os.open(os.path.join(entry.path, _OWNER),
                         os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # not ours, being made, or from before folders had a lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its store is open
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    return removed
