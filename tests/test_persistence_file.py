"""The SQLite store's file: the lock by resolved path, file modes, refusing a file
that is not (or no longer) a garrison store, and ``check_file`` while open."""

from __future__ import annotations

import glob
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison import StoreError, StoreLocked
from garrison.persistence import SQLiteStore, Transaction, _file, _schema, _sqlite

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


def _seeded(path: str, n: int = 3) -> None:
    with SQLiteStore(path) as s:
        for i in range(n):
            s.write(Transaction().create_workflow(f"w{i}", "app:flow", [i]))


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the lock: one node per file, however the file is named -----------------------


def test_a_symlink_to_a_held_store_is_refused(tmp_path: Path, db_path: str) -> None:
    link = tmp_path / "link.db"
    link.symlink_to(db_path)
    with SQLiteStore(db_path), pytest.raises(StoreLocked) as info:
        SQLiteStore(str(link))
    message = str(info.value)
    assert info.value.path == str(link)
    assert str(link) in message and "lock=False" in message
    # the lock file named is the one of the real file
    assert db_path + ".lock" in message


def test_a_store_file_with_two_names_is_refused(tmp_path: Path, db_path: str) -> None:
    """helper-213: a hard link is another name of the same file, with its own lock file,
    -wal and -shm beside it: a node on each name both ran every workflow (each activity
    twice), and SQLite's two write-ahead logs of one file corrupt it. Opening a store
    whose file has more than one name is refused (a node, a tool, ``garrison check``),
    naming the fix; a symbolic link stays one name."""
    _seeded(db_path)
    (tmp_path / "sub").mkdir()
    other = tmp_path / "sub" / "hard.db"
    os.link(db_path, other)
    said = (f"store {str(other)!r}: the file has 2 names (hard links): SQLite keeps a "
            "write-ahead log and a lock beside each name, so two names of one store, "
            "written at once, corrupt it; keep one name (remove the other links; a "
            "symbolic link is fine)")
    for opening in (lambda: SQLiteStore(str(other)),
                    lambda: SQLiteStore(str(other), lock=False),
                    lambda: _sqlite.check_store_file(str(other))):
        with pytest.raises(StoreError) as info:
            opening()
        assert str(info.value) == said
    with pytest.raises(StoreError, match="the file has 2 names"):
        SQLiteStore(db_path)
    assert not os.path.exists(str(other) + "-wal") and not os.path.exists(db_path + "-wal")
    os.unlink(other)
    with SQLiteStore(db_path) as store:  # one name again: as before
        assert len(store.list_workflows()) == 3
    # the name a creation linked the store from, left by a crash between its link and
    # its unlink, is the store's own leftover: removed, and the store opens
    for leftover in (db_path + ".new", str(tmp_path / ".app.db.0123abcd.new")):
        os.link(db_path, leftover)
        with SQLiteStore(db_path) as store:
            assert len(store.list_workflows()) == 3
        assert not os.path.exists(leftover)


def test_another_spelling_of_the_path_is_refused(tmp_path: Path, db_path: str) -> None:
    (tmp_path / "a").mkdir()
    other = os.path.join(str(tmp_path), "a", "..", "app.db")
    with SQLiteStore(db_path), pytest.raises(StoreLocked):
        SQLiteStore(other)
    # and the other way round, from a relative path
    cwd = os.getcwd()
    os.chdir(tmp_path / "a")
    try:
        with SQLiteStore(other), pytest.raises(StoreLocked):
            SQLiteStore("../app.db")
    finally:
        os.chdir(cwd)


def test_a_store_created_through_a_dangling_symlink_lives_at_its_target(tmp_path: Path) -> None:
    target = tmp_path / "data" / "real.db"
    target.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(target)
    with SQLiteStore(str(link)):
        assert target.is_file() and link.is_symlink()
        assert (tmp_path / "data" / "real.db.lock").exists()
        assert not (tmp_path / "link.db.lock").exists()
        with pytest.raises(StoreLocked):
            SQLiteStore(str(target))


# -- file modes -------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize("mode", [None, 0o640])
def test_store_wal_shm_and_lock_files_are_private(db_path: str, mode: int | None) -> None:
    expected = 0o600 if mode is None else mode
    kw = {} if mode is None else {"mode": mode}
    with SQLiteStore(db_path, **kw) as s:  # type: ignore[arg-type]
        s.write(Transaction().create_workflow("w1", "app:flow"))
        for suffix in ("", "-wal", "-shm", ".lock", ".wake"):
            assert os.path.exists(db_path + suffix), suffix
            assert _mode(db_path + suffix) == expected, (suffix, oct(_mode(db_path + suffix)))


@pytest.mark.usefixtures("open_umask")
def test_an_existing_files_mode_is_left_alone(db_path: str) -> None:
    _seeded(db_path)
    os.chmod(db_path, 0o644)
    with SQLiteStore(db_path) as s:
        s.write(Transaction().create_workflow("w9", "app:flow"))
        assert _mode(db_path) == 0o644
        # SQLite gives -wal and -shm the database file's mode, and the node its doorbell
        assert _mode(db_path + "-wal") == 0o644
        assert _mode(db_path + ".wake") == 0o644  # (so a tool that may write may ring)


def test_invalid_mode_is_refused(db_path: str) -> None:
    for bad in (0o1777, -1, "0600", True):
        with pytest.raises(ValueError, match="file mode"):
            SQLiteStore(db_path, mode=bad)  # type: ignore[arg-type]
    assert not os.path.exists(db_path)


# -- what is at the path is checked before it is used -------------------------------


def test_a_truncated_store_is_refused_not_started_over(db_path: str) -> None:
    _seeded(db_path)
    os.truncate(db_path, 0)
    for lock in (True, False):
        with pytest.raises(StoreError, match="truncated") as info:
            SQLiteStore(db_path, lock=lock)
        assert info.value.path == db_path
    assert os.path.getsize(db_path) == 0  # nothing was written over it


def test_a_file_that_is_not_a_sqlite_database_is_refused(db_path: str) -> None:
    Path(db_path).write_text("name,total\nann,3\n")
    for lock in (True, False):
        with pytest.raises(StoreError, match="not a SQLite database") as info:
            SQLiteStore(db_path, lock=lock)
        assert db_path in str(info.value)
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert Path(db_path).read_text() == "name,total\nann,3\n"


def test_a_database_of_another_app_is_refused_and_left_untouched(db_path: str) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ann')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a garrison store") as info:
        SQLiteStore(db_path)
    assert "users" in str(info.value)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not made WAL
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"users"}


def test_a_store_missing_tables_is_refused(db_path: str) -> None:
    _seeded(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE timers")
    conn.execute("DROP TABLE journal")
    conn.commit()
    conn.close()
    for lock in (True, False):
        with pytest.raises(StoreError, match="damaged") as info:
            SQLiteStore(db_path, lock=lock)
        assert "journal" in str(info.value) and "timers" in str(info.value)


def test_a_damaged_store_is_a_store_error_naming_the_file(db_path: str) -> None:
    _seeded(db_path, 200)
    conn = sqlite3.connect(db_path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'schema_version'")
    page = root.fetchone()[0]
    conn.close()
    with open(db_path, "r+b") as f:
        f.seek((page - 1) * 4096)
        f.write(random.Random(7).randbytes(4096))
    with pytest.raises(StoreError, match="damaged") as info:
        SQLiteStore(db_path)
    assert db_path in str(info.value) and "malformed" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_schema_page_damaged_into_text_that_is_not_utf8_is_a_store_error(
        db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """helper-210: 1 in 40 pages damaged on a real store made the schema's table names
    no UTF-8: Python's UnicodeDecodeError (not a SQLite error) came out of every open, a
    traceback and exit 1 on the command line, a bare exception from open_node."""
    from garrison._cli import main

    _seeded(db_path, 5)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE pad (x TEXT)")
    conn.commit()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET name = CAST(X'7061ff64' AS TEXT), "
                 "tbl_name = CAST(X'7061ff64' AS TEXT) WHERE name = 'pad'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"damaged .*schema holds text that is not UTF-8"):
        SQLiteStore(db_path)
    assert main(["workflows", "--store", db_path, "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"garrison workflows: store {db_path!r}: the store is damaged"), err
    assert "Traceback" not in err


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a regular file"):
        SQLiteStore(str(tmp_path), lock=False)


def test_a_store_in_a_missing_folder_says_so(tmp_path: Path) -> None:
    """(It said "cannot open its lock file '.../x.db.lock': No such file or directory",
    naming a file the user never gave.)"""
    missing = tmp_path / "nope"
    with pytest.raises(StoreError) as info:
        SQLiteStore(str(missing / "x.db"))
    assert str(info.value) == (f"store '{missing / 'x.db'}': its folder '{missing}' does "
                               "not exist (a node creates the store's file, not its folder)")
    assert not missing.exists()


def test_an_empty_sqlite_database_becomes_a_store(db_path: str) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.close()
    assert os.path.getsize(db_path) > 0
    with SQLiteStore(db_path) as s:
        assert s.list_workflows() == []


def test_a_new_store_appears_only_complete(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A creation that fails half-way leaves nothing at the path (an empty file there
    would be refused as truncated at the next start)."""

    def broken(*args: object, **kw: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(_schema, "MIGRATIONS", [broken])
    with pytest.raises(StoreError, match="disk I/O error"):
        SQLiteStore(db_path)
    monkeypatch.undo()
    assert not os.path.exists(db_path)
    assert sorted(os.listdir(os.path.dirname(db_path))) == []  # (its lock file too)
    with SQLiteStore(db_path) as s:
        assert s.list_workflows() == []


def test_a_lock_taken_on_a_lock_file_removed_meanwhile_is_taken_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-218: an opener that opened the lock file just before a failed open
    removed it, and took the lock after, held a lock on a file no name reaches, while a
    third opener made a new lock file and took that: two nodes on one store. The lock
    taken is checked to be the file at the lock's name (else taken again there)."""
    path = str(tmp_path / "store.db")
    lock = _file.lock_file(path)
    early: list[int] = []
    real_open = _file._open_new_or_existing

    def opened_then_removed(name: str, mode: int) -> int:
        fd = real_open(name, mode)
        if name == lock and not early:  # (another opener removes it right after this open)
            early.append(fd)
            os.unlink(lock)
        return fd

    monkeypatch.setattr(_file, "_open_new_or_existing", opened_then_removed)
    with SQLiteStore(path) as first:  # its lock is on the file at the lock's name
        monkeypatch.undo()
        assert os.stat(lock).st_ino == os.fstat(first._lock_fd).st_ino
        with pytest.raises(StoreLocked):
            SQLiteStore(path)
    assert early  # (its descriptor of the removed file was closed, the lock taken again)


def test_an_open_refused_leaves_no_lock_file_it_made(tmp_path: Path) -> None:
    """helper-213: ``garrison run app.yaml --store mods.py`` (not a store) was refused
    and left ``mods.py.lock`` beside the source file. An open that fails removes the
    lock file it made; one that was there before (a store a node ran) stays."""
    source = tmp_path / "mods.py"
    source.write_text("print('hello')\n")
    with pytest.raises(StoreError, match="not a SQLite database"):
        SQLiteStore(str(source))
    assert sorted(os.listdir(tmp_path)) == ["mods.py"]
    kept = str(tmp_path / "app.db")
    _seeded(kept)
    with open(kept, "r+b") as damaged:
        damaged.write(b"garbage, not SQLite at all")
    with pytest.raises(StoreError, match="not a SQLite database"):
        SQLiteStore(kept)
    assert os.path.exists(kept + ".lock")


# -- check_file: the file under a running node ---------------------------------------


def test_check_file_passes_while_the_file_is_in_place(db_path: str) -> None:
    with SQLiteStore(db_path) as s:
        s.check_file()
        s.write(Transaction().create_workflow("w1", "app:flow"))
        s.check_file()
    with SQLiteStore() as memory:
        memory.check_file()


def test_check_file_notices_a_deleted_store(db_path: str) -> None:
    with SQLiteStore(db_path) as s:
        os.unlink(db_path)
        with pytest.raises(StoreError, match="deleted or replaced while the node ran") as info:
            s.check_file()
        assert info.value.path == db_path


def test_check_file_notices_a_replaced_store(db_path: str, tmp_path: Path) -> None:
    with SQLiteStore(db_path) as s:
        s.write(Transaction().create_workflow("w1", "app:flow"))
        shutil.copy(db_path, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", db_path)
        with pytest.raises(StoreError, match="deleted or replaced"):
            s.check_file()


def test_check_file_notices_a_truncated_store(db_path: str) -> None:
    with SQLiteStore(db_path) as s:
        os.truncate(db_path, 0)
        with pytest.raises(StoreError, match="truncated"):
            s.check_file()


def test_check_file_notices_a_deleted_lock_file(db_path: str) -> None:
    with SQLiteStore(db_path) as s:
        os.unlink(db_path + ".lock")
        with pytest.raises(StoreError, match="lock file"):
            s.check_file()


def test_check_file_after_close_says_closed(db_path: str) -> None:
    s = SQLiteStore(db_path)
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.check_file()


def test_no_permission_for_the_lock_file_is_a_store_error(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Simulated: the tests may run as root, whom permissions do not stop.)"""
    real_open = os.open

    def refusing(name: str, *args: object, **kw: object) -> int:
        if str(name).endswith(".lock"):
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(StoreError) as info:
        SQLiteStore(db_path)
    message = str(info.value)
    assert db_path in message and db_path + ".lock" in message
    assert "Permission denied" in message
    assert not os.path.exists(db_path)


# -- read-only file systems ------------------------------------------------------------


def _read_only_available(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && "
         f"! touch {probe}/x 2>/dev/null"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode == 0


def run_on_read_only(directory: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run python ``code`` with ``directory`` mounted read-only (a private mount
    namespace: nothing changes for the rest of the machine)."""
    script = (
        f"mount --bind {directory} {directory} && "
        f"mount -o remount,bind,ro {directory} && exec \"$0\" -c \"$1\""
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, sys.executable, code],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip


def run_without_override(code: str) -> subprocess.CompletedProcess[str]:
    """Run python ``code`` as a user whom file modes stop: as root, without the
    capabilities that let root pass them (``capsh``); ``pytest.skip`` if none can."""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("capsh") is None:
            pytest.skip("needs capsh to run without root's way past file modes")
        command = ["capsh", "--drop=cap_dac_override,cap_dac_read_search,cap_fowner",
                   "--", "-c", 'exec "$0" "$@"', *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          check=False, cwd=ROOT)


def test_a_shm_file_the_opener_may_not_write_is_named(tmp_path: Path) -> None:
    """helper-409: SQLite makes the -wal and -shm beside the store for whoever opens it
    first, with the store file's mode: a read of a store while its file was read-only
    (``garrison workflows list``, which reads such a file read-only), or one by
    another user while no node ran, leaves them so. The store's own node then failed,
    ``cannot use the file (attempt to write a readonly database)``, naming a file that
    it may write and not the -shm it may not. The error names the -shm now, and what
    to do."""
    store = str(tmp_path / "app.db")
    _seeded(store)
    os.chmod(store, 0o444)
    code = textwrap.dedent(f"""
        import os
        from garrison import StoreError
        from garrison.persistence import SQLiteStore, Transaction
        with SQLiteStore({store!r}, lock=False, readonly=True) as s:
            print(len(s.list_workflows()))
        os.chmod({store!r}, 0o644)  # (made writable again: its -shm stays as it was made)
        with SQLiteStore({store!r}) as s:  # (the store's own node: its first write)
            try:
                s.write(Transaction().create_workflow("w9", "app:flow", []))
                print("written")
            except StoreError as exc:
                print(exc)
    """)
    done = run_without_override(code)
    assert done.returncode == 0, done.stderr
    assert _mode(store + "-shm") == 0o444
    assert done.stdout.splitlines() == [
        "3",
        f"store {store!r}: cannot use the file (attempt to write a readonly database): "
        f"its -shm file {store + '-shm'!r} is not writable for this process (SQLite "
        "makes it with the store file's mode, for whoever opens the store first: a "
        "reader that may not write the store left it so; with nothing open on the store, "
        "give it the owner and mode of the store's file, or remove it)",
    ], done.stdout


def test_a_new_store_on_a_disk_too_full_for_it_says_so_and_leaves_nothing(
        tmp_path: Path) -> None:
    """helper-210: on a file system with room for the new store's write-ahead log but
    not for the file it is copied into, the copy failed unseen as the connection
    closed, and the incomplete file was linked into place: "the store is damaged ...
    restore the store from a backup", at that open and every later one."""
    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    small = tmp_path / "small"
    small.mkdir()
    code = textwrap.dedent(f"""
        import os
        from garrison import StoreError
        from garrison.persistence import SQLiteStore
        for attempt in (1, 2):
            try:
                SQLiteStore({str(small / "s.db")!r}).close()
                print("created")
            except StoreError as exc:
                print(exc)
        print(sorted(f for f in os.listdir({str(small)!r}) if not f.endswith(".lock")))
    """)
    script = (f"mount -t tmpfs -o size=300k tmpfs {small} && exec \"$0\" -c \"$1\"")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, code],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    full = f"store {str(small / 's.db')!r}: the disk is full (database or disk is full)"
    assert done.stdout.splitlines() == [full, full, "[]"], done.stdout


def test_an_intact_store_on_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    """helper-210: once the disk is full, SQLite cannot grow the store's -shm file and
    says "disk I/O error" at the open, at a write, at a read: the error says the disk
    is full, not only that the file cannot be used."""
    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    small = tmp_path / "small"
    small.mkdir()
    path = str(small / "s.db")
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        from garrison import StoreError
        from garrison.persistence import SQLiteStore, Transaction
        store = SQLiteStore({path!r})
        store.write(Transaction().create_workflow("w0", "app:flow", [1]))
        store.close()
        fd = os.open({str(small / "filler")!r}, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        try:
            SQLiteStore({path!r})
        except StoreError as exc:
            print(exc)
        done = subprocess.run([sys.executable, "-m", "garrison", "workflows", "list",
                               "--store", {path!r}], capture_output=True, text=True)
        print(done.returncode, done.stderr, end="")
    """)
    script = (f"mount -t tmpfs -o size=1m tmpfs {small} && exec \"$0\" -c \"$1\"")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, code],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    full = f"store {path!r}: the disk is full (disk I/O error; 0 bytes free on its file system)"
    assert done.stdout.splitlines() == [full, f"2 garrison workflows: {full}"], done.stdout


def test_read_only_file_system_is_a_store_error_with_the_os_reason(tmp_path: Path) -> None:
    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "app.db")
    _seeded(path)
    os.unlink(path + ".lock")
    code = textwrap.dedent(
        f"""
        from garrison import StoreError
        from garrison.persistence import SQLiteStore
        for lock in (True, False):
            try:
                SQLiteStore({path!r}, lock=lock)
            except StoreError as exc:
                print("StoreError", exc)
            else:
                print("OPENED")
        """
    )
    done = run_on_read_only(data, code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        assert line.startswith("StoreError"), line
        assert path in line and "Read-only file system" in line


def test_a_read_only_open_reads_a_store_on_a_read_only_file_system(tmp_path: Path) -> None:
    """A backup on a read-only mount: ``readonly=True`` failed with "it cannot be opened
    for writing: Read-only file system" (SQLite's ``mode=ro`` must make a -shm file).
    It reads the store now; a copy whose -wal holds transactions but has no -shm (which
    SQLite needs to read them) is a StoreError that says so."""
    if not _read_only_available(tmp_path):
        pytest.skip("needs unshare and mount in a user namespace")
    data = tmp_path / "ro"
    data.mkdir()
    path = str(data / "app.db")
    _seeded(path)
    live = str(tmp_path / "live.db")
    _seeded(live)
    with SQLiteStore(live, lock=False) as tool:  # a commit still in its -wal
        tool.write(Transaction().create_workflow("w9", "app:flow", [9]))
        for name, ends in (("wal.db", ("", "-wal")), ("both.db", ("", "-wal", "-shm"))):
            for end in ends:
                shutil.copy(live + end, str(data / name) + end)
    code = textwrap.dedent(
        f"""
        from garrison import StoreError
        from garrison.persistence import SQLiteStore
        for name in ("app.db", "both.db", "wal.db"):
            try:
                with SQLiteStore({str(data)!r} + "/" + name, readonly=True) as s:
                    print(name, sorted(w.workflow_id for w in s.list_workflows()))
            except StoreError as exc:
                print(name, exc)
        """
    )
    done = run_on_read_only(data, code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["app.db ['w0', 'w1', 'w2']", "both.db ['w0', 'w1', 'w2', 'w9']"]
    wal = str(data / "wal.db")
    assert lines[2] == (
        f"wal.db store {wal!r}: it is on a read-only file system, and its write-ahead log "
        f"{wal + '-wal'!r} ({os.path.getsize(wal + '-wal')} bytes) may hold transactions "
        "not yet copied into it, which SQLite reads only through a -shm file it cannot "
        "make there: copy the store's file with its -wal to a writable folder and open "
        "the copy"), lines[2]


# -- the doorbell: a tool's write reaches the node at once --------------------------


class _Watcher:
    """The node store's wakeup watcher in a thread of its own (as ``wakeups()`` runs
    it), with a flag set once it waits on its doorbell or polls."""

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.waiting = threading.Event()
        wait_rung = _file.wait_rung
        closing_wait = store._closing.wait

        def rung(fd: int, timeout: float) -> None:
            self.waiting.set()
            wait_rung(fd, timeout)

        def poll(timeout: float) -> bool:
            self.waiting.set()
            return closing_wait(timeout)

        monkeypatch.setattr(_file, "wait_rung", rung)
        monkeypatch.setattr(store._closing, "wait", poll)
        self.thread = threading.Thread(target=store._wait_for_wakeup, daemon=True)
        self.thread.start()
        assert self.waiting.wait(10), "the watcher never waited"

    def returned(self) -> bool:
        self.thread.join(10)
        return not self.thread.is_alive()


def _tool_send(db_path: str) -> None:
    with SQLiteStore(db_path, lock=False) as tool:
        tool.deliver("w0", "signal", {"go": True}, sender="cli/1")


def test_a_tools_write_rings_the_nodes_doorbell(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's watcher sleeps on its doorbell (a FIFO beside the store) and wakes
    when a tool writes, not after a poll interval (an hour here)."""
    _seeded(db_path, 1)
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    with SQLiteStore(db_path) as node:
        assert stat.S_ISFIFO(os.stat(db_path + ".wake").st_mode)
        watcher = _Watcher(node, monkeypatch)
        _tool_send(db_path)
        assert watcher.returned()
        assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]
    assert not os.path.exists(db_path + ".wake")  # removed as the node closes
    assert os.path.exists(db_path + ".lock")


def test_a_write_that_rings_no_bell_is_found_within_a_second(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that rings no bell (a tool of an older garrison, a doorbell deleted
    under the node) is found by the watcher's look at the table once a second
    (``POLL_RUNG``, shortened here)."""
    _seeded(db_path, 1)
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 0.05)
    with SQLiteStore(db_path) as node:
        watcher = _Watcher(node, monkeypatch)
        os.unlink(db_path + ".wake")  # the tool finds no doorbell to ring
        _tool_send(db_path)
        assert watcher.returned()
        assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]


def test_closing_the_store_wakes_its_watcher(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    node = SQLiteStore(db_path)
    watcher = _Watcher(node, monkeypatch)
    node.close()
    assert watcher.returned()
    assert sorted(os.listdir(os.path.dirname(db_path))) == ["app.db", "app.db.lock"]


def test_another_file_at_the_doorbells_name_is_left_alone(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something else at ``<store>.wake`` (not a FIFO): the node polls its table as
    before, a tool rings nothing into that file, and the node's close leaves it."""
    _seeded(db_path, 1)
    Path(db_path + ".wake").write_text("not ours")
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)  # (unused: there is no doorbell)
    with SQLiteStore(db_path) as node:
        watcher = _Watcher(node, monkeypatch)
        _tool_send(db_path)
        assert watcher.returned()
        assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]
    assert Path(db_path + ".wake").read_text() == "not ours"


def test_the_doorbell_works_past_selects_descriptor_limit(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node with many sockets open: its doorbell's descriptor is past 1,024, where
    ``select`` raises; the watcher still waits on it (and a tool's write wakes it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    _seeded(db_path, 1)
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with SQLiteStore(db_path) as node:
            watcher = _Watcher(node, monkeypatch)
            _tool_send(db_path)
            assert watcher.returned()
            assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]
    finally:
        for fd in filler:
            os.close(fd)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_tools_write_that_waited_for_the_lock_rings_too(
        db_path: str, autojump_clock: object) -> None:
    """A tool's commit that found the store locked (the node writing) is retried in a
    worker thread, as a batch: it rings the doorbell as a commit written at once does
    (it was found only by the once-a-second look)."""
    import trio
    import trio.testing

    _seeded(db_path, 1)
    with SQLiteStore(db_path) as node:
        bell = _file.open_doorbell(db_path + ".wake")  # (the watcher's end)
        assert bell is not None
        try:
            with SQLiteStore(db_path, lock=False, busy_timeout=0.01) as tool:
                holder = sqlite3.connect(db_path, isolation_level=None)
                holder.execute("BEGIN IMMEDIATE")  # the node in a write
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(tool.commit, Transaction().deliver("w0", "signal"))
                    await trio.testing.wait_all_tasks_blocked()  # retrying in a thread
                    holder.execute("COMMIT")
                holder.close()
            assert os.read(bell, 16) == b"\0"
        finally:
            os.close(bell)
        assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]


def test_closing_the_store_wakes_its_watcher_with_the_doorbell_deleted(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close wakes the watcher through the node's own end of its doorbell, not by
    its name: a doorbell deleted (or another file put at its name) under the node
    left the watcher (and its connection to the store) running on for a second."""
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    node = SQLiteStore(db_path)
    watcher = _Watcher(node, monkeypatch)
    os.unlink(db_path + ".wake")
    node.close()
    assert watcher.returned()


def test_a_close_as_the_watcher_drains_its_doorbell_still_stops_it(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store closes (and rings) after the watcher checked it was open and before
    it read its doorbell: the read takes the close's ring, and the watcher must not
    then wait for another."""
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    node = SQLiteStore(db_path)
    drain = _file.drain_doorbell

    def closed_first(fd: int) -> None:
        node.close()
        drain(fd)

    monkeypatch.setattr(_file, "drain_doorbell", closed_first)
    thread = threading.Thread(target=node._wait_for_wakeup, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def test_a_doorbell_a_killed_node_left_is_rung_and_takes_the_stores_mode(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node killed (SIGKILL) leaves its doorbell; the next node rings it, with the
    store file's mode of now (made group-writable since, here: the group's tools must
    be able to ring)."""
    _seeded(db_path, 1)
    os.mkfifo(db_path + ".wake", 0o600)
    os.chmod(db_path, 0o660)
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    with SQLiteStore(db_path) as node:
        assert _mode(db_path + ".wake") == 0o660
        watcher = _Watcher(node, monkeypatch)
        _tool_send(db_path)
        assert watcher.returned()
        assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]
    assert not os.path.exists(db_path + ".wake")


def test_taking_wakeups_while_a_tool_writes_takes_none_yet(db_path: str) -> None:
    """A tool holds the store's write lock (writing, as it does right after it rang):
    the node's take finds none yet (its rows wait for the next take), not a raw
    ``sqlite3.OperationalError: database is locked``, which ended the node."""
    _seeded(db_path, 1)
    with SQLiteStore(db_path) as node:
        _tool_send(db_path)
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a tool's next write
        try:
            assert node.take_wakeups() == []
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert [w.workflow_id for w in node.take_wakeups()] == ["w0"]


async def test_the_wakeup_watch_waits_out_a_tools_write(
        db_path: str, autojump_clock: object) -> None:
    """``wakeups()`` meeting a tool's write in progress tries again after a pause, and
    returns the tool's rows once the write is done."""
    import trio
    import trio.testing

    _seeded(db_path, 1)
    with SQLiteStore(db_path) as node:
        _tool_send(db_path)
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        got: list[str] = []

        async def watch() -> None:
            got.extend(w.workflow_id for w in await node.wakeups())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            holder.execute("COMMIT")
            holder.close()
        assert got == ["w0"]


def _inbox_ids(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT msg_id FROM inbox")}
    finally:
        conn.close()


def test_a_tools_store_refuses_to_write_or_read_a_file_replaced_under_it(
        db_path: str, tmp_path: Path) -> None:
    """An operator restores a backup (``mv backup.db store.db``) while ``garrison ui``
    holds the store open as a tool (``lock=False``): its next write is a StoreError
    naming the file, and nothing is written to either file (it used to answer 200 and
    write into the unlinked file, or an orphan -wal the restored file later read)."""
    _seeded(db_path, 1)
    backup = str(tmp_path / "backup.db")
    _seeded(backup, 1)
    old = str(tmp_path / "old.db")
    tool = SQLiteStore(db_path, lock=False)
    try:
        tool.deliver("w0", "before", 1, msg_id="m-before")
        os.link(db_path, old)  # the file opened, still reachable once replaced
        os.replace(backup, db_path)
        with pytest.raises(StoreError, match="deleted or replaced") as info:
            tool.deliver("w0", "after", 2, msg_id="m-after")
        assert info.value.path == db_path and db_path in str(info.value)
        with pytest.raises(StoreError, match="deleted or replaced"):
            tool.get_workflow("w0")
    finally:
        tool.close()
    # the refused write is in neither file (the one before the replace may be in
    # either: the -wal it sits in is found by name, SQLite's own hazard of a move)
    assert "m-after" not in _inbox_ids(db_path) | _inbox_ids(old)


async def test_a_tools_commit_refuses_a_deleted_file(db_path: str) -> None:
    """The same check on the async path (``commit``), for a deleted store file."""
    _seeded(db_path, 1)
    with SQLiteStore(db_path, lock=False) as tool:
        await tool.commit(Transaction().deliver("w0", "before", 1, msg_id="m-1"))
        os.unlink(db_path)
        with pytest.raises(StoreError, match="deleted or replaced") as info:
            await tool.commit(Transaction().deliver("w0", "after", 2, msg_id="m-2"))
        assert info.value.path == db_path


def test_an_in_memory_store_killed_with_its_process_leaves_no_folder_for_long(
        tmp_path: Path) -> None:
    """An in-memory store keeps its SQLite file in a folder of the temp folder, removed
    when it closes. A process killed with the store open cannot remove it: the next
    in-memory store opened, by any process of the same user, removes every such folder
    whose owner is gone, and no folder of a store still open."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    opener = ("import os, signal, sys, time; from garrison.persistence import SQLiteStore; "
              "s = SQLiteStore(); print('open', flush=True); {then}")

    def python(then: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", opener.format(then=then)], env=env,
                                cwd=ROOT, text=True, stdout=subprocess.PIPE, **kw)

    holder = python("sys.stdin.read()", stdin=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        held = set(os.listdir(tmp_path))
        assert len(held) == 1
        killed = python("os.kill(os.getpid(), signal.SIGKILL)")
        assert killed.wait(timeout=60) == -9
        left = set(os.listdir(tmp_path)) - held
        assert len(left) == 1  # the killed process's folder, with its SQLite file in it
        closed = python("s.close()")
        assert closed.wait(timeout=60) == 0
        assert set(os.listdir(tmp_path)) == held  # the dead one's is gone; the open one's not
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_watcher_whose_query_fails_as_the_file_is_deleted_says_the_store_is_gone(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's file deleted under a running node: the wakeup watcher's own query
    met it first ('disk I/O error', or 'no such table' in a file made anew) and its
    thread died with that bare sqlite3 error, which ended the node (CI met it once);
    its look at the file, once a second, says what happened. The query's error now
    takes that look at once: the node hears the store is gone, as from the look."""
    monkeypatch.setattr(_sqlite, "POLL_RUNG", 3600.0)
    node = SQLiteStore(db_path)
    try:
        node._file_checked = time.monotonic()  # (the look once a second not due yet)
        for path in glob.glob(db_path + "*"):
            if not path.endswith((".lock", ".wake")):
                os.unlink(path)
        errors: list[BaseException] = []

        def watch() -> None:
            try:
                node._wait_for_wakeup()
            except BaseException as exc:  # (a thread's error is otherwise only printed)
                errors.append(exc)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
        assert errors == []
        assert isinstance(node._failure, StoreError), node._failure
        assert "deleted or replaced while the node ran" in str(node._failure)
    finally:
        node.close()
