"""What the console shows and does, as JSON-ready dicts: one backend on a store (a
tool, ``lock=False``) and one attached to a running node.

Both read the workflows from the store, whose status column is current: a node
writes ``waiting`` and ``sleeping`` there within about 50 ms of a workflow parking
(and ``running`` with its next step), so the list's status filters are the store's
indexed queries. The node backend adds what only a running node knows: the exact
status of the workflows it runs, its processes, services and their supervision
tree, and it acts through the node API (``node.workflow(id)``). It serves every
durable workflow host of the node (``?host=``; by default the host ``workflows``
names, or the first host whose store persists when that one is in memory). The
store backend acts through ``garrison._store_tools``, exactly as ``garrison
workflows`` does, so a node that holds the store is woken at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from .. import _store_tools as tools
from .._errors import NoSuchWorkflow, PromiseAlreadyCompleted
from .._node import workflow_host
from .._store_tools import strict_json
from ..actors._values import Pid
from ..hosts.workflow._ids import MAX_KEY_BYTES
from ..persistence import JournalRecord, WorkflowStatus, run_blocking

__all__ = ["ApiError", "Backend", "NodeBackend", "StoreBackend", "strict_json"]

#: the journal records one workflow page shows at most (the latest ones)
JOURNAL_SHOWN = 2000
#: the inbox messages (the first to arrive), promises (the pending ones first) and
#: state keys one workflow page shows at most; the answer counts them all
INBOX_SHOWN = 500
PROMISES_SHOWN = 500
STATE_SHOWN = 500
#: the processes the node page lists at most
PROCESSES_SHOWN = 2000
#: the actions of a store console written at once (each in a worker thread)
ACTIONS_AT_ONCE = 4
#: the children of one workflow listed at most (as garrison workflows show lists them)
CHILDREN_SHOWN = tools.CHILDREN_SHOWN
#: the store rows one page of a live status filter reads at most (a page whose rows
#: changed status meanwhile ends early, with a cursor to go on from)
SCAN_SHOWN = 2000
#: the statuses a workflow can be retried from (resumed by replay from its journal)
RETRYABLE = ("failed", "blocked")
#: the JSON text of one value a workflow page shows at most (its result, input, error,
#: a state value, a search attribute, a journal outcome, a message's payload; bytes of
#: UTF-8): a bigger one is cut (see :func:`shown`)
VALUE_SHOWN = 64 * 1024
#: the same for one search attribute of a row of the list (50 rows a page)
LIST_VALUE_SHOWN = 1024
#: all the values of one workflow page together (bytes of JSON text): once they reach it,
#: each further value is cut at :data:`SPENT_SHOWN` (thousands of values just under
#: :data:`VALUE_SHOWN` each would make a poll hundreds of megabytes)
DETAIL_SHOWN = 2 * 1024 * 1024
#: the search attributes of one row of the list together
ROW_SHOWN = 8 * 1024
#: what a value shows once its answer's allowance is spent
SPENT_SHOWN = 64
#: the characters of a journal record's stored outcome a workflow page reads first:
#: enough to show it once the allowance is spent (see :func:`_journal_rows`)
SPENT_READ = 3 * SPENT_SHOWN + 12


def _json_text(value: Any) -> str:
    return tools.standard_json(value, ensure_ascii=False, separators=(",", ":"))


def shown(value: Any, limit: int = VALUE_SHOWN) -> Any:
    """``value`` as the console shows it: itself when its JSON text is at most ``limit``
    bytes, else ``{"$cut": true, "bytes": its JSON text's size, "head": the start of
    that text}`` (a workflow that returns 50 MB must not make every poll of its page
    50 MB). Encodes ``value``: call it in a worker thread."""
    return _shown(value, limit)[0]


def _shown(value: Any, limit: int) -> tuple[Any, int]:
    """:func:`shown`, and about how many bytes of JSON text that is."""
    if value is None or isinstance(value, bool | int | float):
        return value, 8
    # (short text: as it is; a control character takes 6 bytes, \u0000)
    if isinstance(value, str) and len(value) * 6 + 2 <= limit:
        return value, _text_size(value)
    text = _json_text(value)
    if len(text) * 4 <= limit:
        return value, len(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return value, size
    return {"$cut": True, "bytes": size, "head": _head(text, limit)}, limit + 40


def _text_size(value: str) -> int:
    """About how many bytes of JSON text the string ``value`` takes."""
    if value.isascii() and value.isprintable():
        return len(value) + 2
    return len(_json_text(value).encode("utf-8", "surrogatepass"))


class Allowance:
    """What one answer may still show, in bytes of JSON text: each value is
    :func:`shown` within :data:`VALUE_SHOWN` (``each``) and within what is left, and at
    least :data:`SPENT_SHOWN` once it is spent."""

    __slots__ = ("each", "left")

    def __init__(self, total: int, each: int = VALUE_SHOWN) -> None:
        self.left = total
        self.each = each

    def limit(self) -> int:
        """The bytes of JSON text the next value may show."""
        return max(SPENT_SHOWN, min(self.each, self.left))

    def show(self, value: Any) -> Any:
        out, size = _shown(value, self.limit())
        self.left -= size
        return out

    def text(self, value: Any, least: int = SPENT_SHOWN) -> Any:
        """:func:`shown_text` within the allowance (an error's texts, and every name the
        page shows from the workflow's data: a topic, a journal record's name, a key),
        cut at ``least`` bytes at the shortest."""
        limit = max(least, min(self.each, self.left))
        out = shown_text(value, limit)
        self.left -= _text_size(out) if isinstance(out, str) else 8
        return out

    def name(self, value: Any) -> Any:
        """A state key or promise name within the allowance: one of at most
        :data:`MAX_KEY_BYTES` (the most a workflow may give) is never cut, as it names
        the entry (two keys cut alike would be one, a promise's Resolve… would act on
        another name); a longer one (an older garrison's) is cut, and counted."""
        return self.text(value, MAX_KEY_BYTES)

    def mapping(self, values: Any) -> tuple[Any, int]:
        """A mapping (search attributes, memo) with each key and value shown within the
        allowance (a key cut as a text, :meth:`text`), and how many entries it leaves
        out: once the allowance is spent, the entries that follow are not shown (nor
        one whose cut key is that of an entry shown before)."""
        if not isinstance(values, dict):
            return self.show(values), 0
        out: dict[str, Any] = {}
        left_out = 0
        for index, (key, value) in enumerate(values.items()):
            if self.left <= 0:
                return out, left_out + len(values) - index
            shown_key = self.text(str(key))
            self.left -= 1
            if shown_key in out:
                left_out += 1
                continue
            out[shown_key] = self.show(value)
        return out, left_out


def shown_text(text: Any, limit: int = VALUE_SHOWN) -> Any:
    """A text the console shows as text (an error's message or traceback), cut at
    ``limit`` bytes with a note of its whole size."""
    if not isinstance(text, str) or len(text) * 4 <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return text
    return f"{_head(text, limit)}… (cut: {size:,} bytes in all)"


def _head(text: str, limit: int) -> str:
    """The start of ``text`` that is at most ``limit`` bytes of UTF-8."""
    # (a character cut in two at the end is dropped, as is a lone surrogate)
    return text[:limit].encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def _mapping_fields(name: str, values: Any, allowance: Allowance) -> dict[str, Any]:
    """``{name: the mapping as shown}``, and ``{name}_omitted``: how many of its entries
    the allowance left out, when it left some out."""
    shown_values, omitted = allowance.mapping(values)
    if omitted:
        return {name: shown_values, f"{name}_omitted": omitted}
    return {name: shown_values}


def _shown_error(error: Any, allowance: Allowance) -> Any:
    """An error's ``{"type", "message", "traceback"}`` with its texts cut."""
    if not isinstance(error, dict):
        return error
    return {key: allowance.text(value) for key, value in error.items()}



def _journal_rows(heads: Sequence[Any], read: Callable[..., list[Any]],
                  allowance: Allowance) -> list[dict[str, Any]]:
    """The journal's rows of a workflow page, ``heads`` (the store's ``journal_heads``,
    read with no outcome text) in seq order, each outcome within ``allowance`` as
    :meth:`Allowance.show` shows it, reading (``read(head, after, limit)``) only as much
    of each outcome's stored text as it may show: a JSON text of ``n`` characters takes
    at least ``n / 3`` bytes as the console writes it (an escape ``\\u00e9`` is 6
    characters, its ``é`` 2 bytes), so one of more than three times what a value may
    show is cut, from the start of its stored text, without being read further nor
    decoded (its ``bytes``: the stored text's size); a smaller one is decoded, and
    shown exactly as any value is. Rows are read in runs of as many as the allowance
    may show in part; once it is spent, the rest are shown as ``heads`` has them
    (:data:`SPENT_READ` characters of each)."""
    rows: list[dict[str, Any]] = []
    i = 0
    while i < len(heads):
        limit = allowance.limit()
        end = len(heads)
        if limit > SPENT_SHOWN:  # (a run of the rows the allowance left may show)
            end, spent = i, 0
            while end < len(heads) and spent <= allowance.left:
                size = heads[end].size
                spent += (size if size <= 3 * limit else limit) + 40
                end += 1
        # (once the allowance is spent, or where every outcome was read whole, the
        # heads as listed: read SPENT_READ long. A journal begun again since it was
        # listed, by a continue-as-new, has other records at these seqs: they are
        # shown as read, and a seq gone with no outcome)
        got = {} if limit <= SPENT_SHOWN or all(h.whole for h in heads[i:end]) else {
            h.seq: h for h in read(3 * limit + 12, heads[i].seq - 1, end - i)}
        if got:
            # (a record written meanwhile in a gap of seqs took the place of one listed
            # in the count read: that one is read on its own)
            for listed in heads[i:end]:
                if listed.seq not in got and not listed.whole:
                    got.update((h.seq, h) for h in read(3 * limit + 12, listed.seq - 1, 1))
        for listed in heads[i:end]:
            h = got.get(listed.seq, listed)
            row: dict[str, Any] = {"seq": h.seq, "time": _when(h.time), "kind": h.kind,
                                   "name": allowance.text(h.name)}
            limit = allowance.limit()
            if h.size <= 3 * limit and h.whole:  # (it may be small enough to show whole)
                outcome = h.outcome()
                row.update(outcome=allowance.show(outcome), attempts=h.attempts,
                           ok=_outcome_ok(outcome))
            else:
                text = _compact(h.text)
                row.update(outcome={"$cut": True, "bytes": h.size,
                                    "head": _head(_unescaped(text), limit)},
                           attempts=h.attempts, ok=_head_ok(text))
                allowance.left -= limit + 40
            rows.append(row)
        i = end
    return rows


#: a string of JSON text (one cut at the end too, after an escape's backslash), or
#: white space between its tokens
_SPACED = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z))|[ \t\n\r]+')
#: JSON text up to its first white space between tokens (its strings read whole)
_UNSPACED = re.compile(r'(?:"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[^" \t\n\r]+)*')


def _compact(text: str) -> str:
    """The start of a stored JSON text without white space between its tokens (one
    stored by hand, or by another writer of JSON, with spaces after its colons and
    commas): as the console writes the value decoded. A text with none (garrison's) is
    read once, in one match."""
    if _UNSPACED.match(text).end() == len(text):  # type: ignore[union-attr]
        return text
    return _SPACED.sub(r"\1", text)


#: a ``\\uXXXX`` escape of stored JSON text (after any backslashes: an odd number of
#: them makes the last one an escape's), and the low half of a surrogate pair after it.
#: Each run of backslashes is tried from its first alone: tried from each, a text
#: holding a long run was read to the run's end once for each of them
_ESCAPE = re.compile(r"(?<!\\)(\\+)u([0-9a-fA-F]{4})(?:\\u([dD][c-fC-F][0-9a-fA-F]{2}))?")
#: an escape cut at the end of a text read in part
_CUT_ESCAPE = re.compile(r"(?<!\\)(\\+)(u[0-9a-fA-F]{0,3})?$")


def _unescaped(text: str) -> str:
    """The start of a stored JSON text (written with every character past ASCII
    escaped) as the console writes JSON, those characters as they are (control
    characters stay escaped; a lone surrogate is kept, for :func:`_head` to leave it
    out where it leaves it out of a decoded value's text, after counting its 3 bytes),
    a bare NaN or infinity as the string :func:`~garrison._store_tools.standard_json`
    writes, without an escape cut at its end."""
    def one(m: re.Match[str]) -> str:
        slashes, code, low = m.group(1), int(m.group(2), 16), m.group(3)
        rest = "" if low is None else "\\u" + low
        if len(slashes) % 2 == 0:  # (an escaped backslash, then the letter u; what
            # looked like the low half of a pair after it is an escape of its own)
            return slashes + "u" + m.group(2) + _unescaped(rest)
        keep = slashes[:-1]
        if 0xD800 <= code < 0xDC00 and low is not None:
            return keep + chr(0x10000 + ((code - 0xD800) << 10) + int(low, 16) - 0xDC00)
        if code < 0x20:
            return keep + "\\u" + m.group(2) + _unescaped(rest)
        return keep + chr(code) + _unescaped(rest)

    cut = _CUT_ESCAPE.search(text)
    if cut is not None and len(cut.group(1)) % 2:
        text = text[:cut.start() + len(cut.group(1)) - 1]
    if "NaN" in text or "Infinity" in text or _PART_END.search(text, len(text) - 9):
        text = _BARE.sub(_quoted, text)
    return _ESCAPE.sub(one, text)


#: a string of JSON text (one cut at the end too), or a NaN or infinity outside one
#: (or the start of one the text ends in, or of a number: a minus sign)
_BARE = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|(-?Infinity|NaN)|(-?I[nfity]*|Na?|-)\Z')
#: the start of a NaN or an infinity (or of a number) a text ends in, outside a string
#: or in one (:data:`_BARE` tells which)
_PART_END = re.compile(r"(?:-?I[nfity]*|Na?|-)\Z")


def _quoted(m: re.Match[str]) -> str:
    """A NaN or infinity of :data:`_BARE` as the string the console writes it as; one
    the text ends in, as the start of that string (a minus sign alone, which may be a
    number's too, is left out)."""
    if m.group(1) is not None:
        return f'"{m.group(1)}"'
    if m.group(2) is not None:
        return "" if m.group(2) == "-" else f'"{m.group(2)}'
    return m.group(0)


#: a string, or a bracket, of JSON text
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[][{}]')


def _head_ok(text: str) -> bool:
    """:func:`_outcome_ok` of an outcome of which ``text``, the start of its JSON
    text, was read: False if that start has the key ``error`` or ``rejected`` at its
    top level."""
    if not text.startswith("{"):
        return True
    depth = 0
    for token in _TOKEN.finditer(text):
        t = token.group()
        if t in "[{":
            depth += 1
        elif t in "]}":
            depth -= 1
        elif depth == 1 and t in ('"error"', '"rejected"') and \
                text.startswith(":", token.end()):
            return False
    return True

class ApiError(Exception):
    """A refused request: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------ paging cursors
def encode_cursor(created: Any, workflow_id: str) -> str:
    """The opaque ``next`` cursor of a page: the last record's ``(created, id)``."""
    stamp = created.timestamp() if created is not None else 0.0
    raw = json.dumps([stamp, workflow_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(created, workflow_id)`` of a cursor; :class:`ApiError` 400 if it is not one
    (not base64 JSON, not ``[time, id]``, a time no date has, an id no store holds)."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_",
                               validate=True)
        value = strict_json(raw)
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(cursor)
        stamp, workflow_id = value
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) \
                or not isinstance(workflow_id, str):
            raise ValueError(cursor)
        stamp = float(stamp)
        _dt.datetime.fromtimestamp(stamp, _dt.UTC)  # a time a store can compare with
    except (ValueError, binascii.Error, OverflowError, OSError):
        raise ApiError(400, f"after={cursor[:80]!r} is not a cursor of this console (use "
                            "the 'next' value of the previous page)") from None
    return stamp, workflow_id


def parse_statuses(values: Sequence[str]) -> list[str]:
    """``status=a,b`` (or repeated): checked against the workflow statuses."""
    statuses = [s.strip() for value in values for s in value.split(",") if s.strip()]
    known = [s.value for s in WorkflowStatus]
    for status in statuses:
        if status not in known:
            raise ApiError(400, f"status {status!r} is not a workflow status: expected one "
                                f"of {', '.join(known)}")
    return statuses


def parse_search(values: Sequence[str]) -> dict[str, Any] | None:
    """``search=KEY=VALUE`` (repeated, every one must match): the value is JSON, or else
    a plain string; ``None`` for a key given twice with different values (nothing
    matches). As the command line's ``--search`` (:func:`~.._store_tools.search_filters`)."""
    try:
        return tools.search_filters(values, "search")
    except tools.ToolError as exc:
        raise ApiError(400, str(exc)) from None


def _when(value: Any) -> str | None:
    """A time as ISO 8601 UTC, ``None`` for no time."""
    return None if value is None else tools.when(value)


def _outcome_ok(outcome: Any) -> bool:
    """False for a journal record that holds a failure (an activity's or call's error,
    a rejected promise, a failed child)."""
    return not (isinstance(outcome, dict) and ("error" in outcome or "rejected" in outcome))


class Backend:
    """The reads both backends share (they differ in hosts, live status and actions).

    Every method that names a workflow takes ``host``: a host name of a console
    attached to a node (``None``: the default host, or for one workflow the first
    host whose store holds it); a store console has no hosts and takes ``None`` only.
    """

    #: attached to a running node (live statuses, processes, services)
    live = False
    #: the store is open read-only: the console shows it and acts on nothing
    read_only = False
    #: the default host's store
    store: Any
    #: the default host (``None``: a store console)
    default: str | None = None

    # -- to override -----------------------------------------------------------------
    def running(self) -> None:
        """:class:`ApiError` 503 once what this console serves has stopped (a store
        console's store answers each request, or not, by itself)."""

    def stores(self) -> dict[str | None, Any]:
        """Each host's store, by host name (a store console: ``{None: store}``)."""
        return {None: self.store}

    def status_of(self, rec: Any, host: str | None) -> str:
        """The workflow's status as the console shows it."""
        return str(rec.status)

    def close(self) -> None:
        """Release what the backend opened."""

    def pid_of(self, rec: Any, host: str | None) -> Pid:
        """The workflow's pid."""
        return Pid(host or rec.host or "workflows", rec.workflow_id)

    # -- hosts -------------------------------------------------------------------------
    def store_of(self, host: str | None) -> tuple[str | None, Any]:
        """``(host, store)`` of ``host`` (``None``: the default); 400 for another name."""
        stores = self.stores()
        if host is None:
            return self.default, stores[self.default]
        if host not in stores:
            if self.default is None:
                raise ApiError(400, f"host={host!r}: this console serves one store "
                                    f"({self.store.path}), not the hosts of a node")
            raise ApiError(400, f"host={host!r} is not a workflow host of this node "
                                f"(workflow hosts: {', '.join(map(str, stores))})")
        return host, stores[host]

    async def locate(self, workflow_id: str,
                     host: str | None) -> tuple[str | None, Any, Any]:
        """``(host, store, record)`` of the workflow; 404 if no store holds it. The
        stores are read in a worker thread (see :meth:`list_page`)."""
        stores = self.stores()
        if host is not None:
            candidates = [self.store_of(host)]
        else:
            candidates = [(name, stores[name]) for name in
                          (self.default, *(n for n in stores if n != self.default))]

        def read() -> tuple[str | None, Any, Any] | None:
            for name, store in candidates:
                rec = store.get_workflow(workflow_id)
                if rec is not None:
                    return name, store, rec
            return None

        found = await trio.to_thread.run_sync(read)
        if found is not None:
            return found
        if host is not None:
            name, store = candidates[0]
            raise ApiError(404, f"no workflow {workflow_id!r} on host {name!r} "
                                f"({store.path or 'in memory'})")
        where = ", ".join(str(store.path or "in memory") for store in stores.values())
        raise ApiError(404, f"no workflow {workflow_id!r} in {where}")

    # -- capabilities ------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        """What this console can do (``GET /api/capabilities``)."""
        return {
            "live": self.live,
            "store": self.store.path,
            "host": self.default,
            "hosts": [{"name": name, "store": store.path}
                      for name, store in self.stores().items() if name is not None],
            "statuses": [s.value for s in WorkflowStatus],
            "actions": ["signal", "resolve", "reject", "cancel", "retry"],
            "retry": True,
        }

    # -- the list ----------------------------------------------------------------------
    async def list_page(self, statuses: list[str], search: dict[str, Any] | None,
                        id_prefix: str | None, after: str | None, limit: int,
                        newest_first: bool = True, host: str | None = None,
                        parent: str | None = None) -> dict[str, Any]:
        """One page of the workflow list, and the cursor of the next (``None``: last).
        ``search`` ``None``: filters no workflow can match (see :func:`parse_search`).
        ``parent``: the children of that pid only (a workflow page's link to the
        children it does not list).

        A status filter is the store's indexed query; a row whose status changed since
        the store was told (a node records a parked workflow within ~50 ms) is left
        out, and at most :data:`SCAN_SHOWN` rows are read for one page. The store is
        read in a worker thread (its reads are thread-safe: a read connection of their
        own, as :meth:`detail`'s), so a slow database (a stalled PostgreSQL server)
        never holds up the node's event loop; the node's own statuses are read here,
        in the trio thread, where its tables may be walked."""
        cursor: tuple[float, str] | None = decode_cursor(after) if after else None
        name, store = self.store_of(host)
        if search is None:
            return {"workflows": [], "next": None}
        wanted = set(statuses)
        rows: list[tuple[Any, str]] = []
        batch = limit + 1
        scanned = 0
        last_read: Any = None
        more = False
        while True:
            found = await trio.to_thread.run_sync(partial(
                store.list_workflows, statuses or None, search or None, limit=batch,
                after=cursor, newest_first=newest_first, id_prefix=id_prefix or None,
                parent=parent or None))
            for rec in found:
                status = self.status_of(rec, name)
                if not wanted or status in wanted:
                    if len(rows) == limit:
                        more = True
                        break
                    rows.append((rec, status))
                scanned += 1
                last_read = rec
            if more or len(found) < batch:
                break
            if scanned >= SCAN_SHOWN:
                more = True  # go on from the last row read, next page
                break
            cursor = (found[-1].created.timestamp(), found[-1].workflow_id)
        # (in a worker thread: a row's search attributes may be megabytes to cut)
        summaries = await trio.to_thread.run_sync(
            lambda: [self._summary(rec, status, name) for rec, status in rows])
        return {
            "workflows": summaries,
            "next": encode_cursor(last_read.created, last_read.workflow_id)
            if more and last_read is not None else None,
        }

    @staticmethod
    def _summary(rec: Any, status: str, host: str | None) -> dict[str, Any]:
        return {"workflow_id": rec.workflow_id, "name": rec.name, "status": status,
                "host": host or rec.host,
                "created": tools.when(rec.created), "updated": tools.when(rec.updated),
                **_mapping_fields("search", rec.search,
                                  Allowance(ROW_SHOWN, LIST_VALUE_SHOWN))}

    # -- one workflow ------------------------------------------------------------------
    def _parent_store(self, rec: Any) -> tuple[str | None, Any] | None:
        """The host and store that would hold the workflow's parent, if it is one."""
        if rec.parent is None:
            return None
        if self.default is None:
            return None, self.store
        try:
            return self.store_of(rec.parent.host)
        except ApiError:  # a process of a process host
            return None

    def limits_of(self, host: str | None) -> dict[str, Any] | None:
        """The limits of workflow host ``host``'s queue, when this console knows them
        (attached to a node: its config); ``None``: the store's word, if any."""
        return None

    def _read(self, store: Any, rec: Any, pid: Pid,
              parent_at: tuple[str | None, Any] | None,
              limits: dict[str, Any] | None = None, *, retryable: bool = False
              ) -> dict[str, Any]:
        """Everything of one workflow the stores hold, read in a worker thread (the
        store's reads are thread-safe) so that a page polling a long journal or a
        full inbox never holds up the node's workflows. Of the journal, its last
        :data:`JOURNAL_SHOWN` records, its ``timer`` records and its size are read, not
        the whole of it (a journal of 100,000 records, or of megabytes of results, at
        each poll), unless the workflow is ``retryable`` (its retry note reads it all)."""
        wid = rec.workflow_id
        parent = None
        if parent_at is not None:
            found = parent_at[1].get_workflow(rec.parent.id)
            parent = (parent_at[0], found) if found is not None else None
        children = [(name, child) for name, other in self.stores().items()
                    for child in other.list_workflows(parent=pid, limit=CHILDREN_SHOWN)]
        # (all of them counted, on each store's index: the list above stops at 500)
        children_total = len(children) if len(children) < CHILDREN_SHOWN else sum(
            other.count_workflows(parent=pid) for other in self.stores().values())
        whole = store.journal(wid) if retryable else None
        # (one record more than is shown: a journal no longer than that is read once,
        # its records all there, its size and timers among them). Not their outcomes:
        # _build reads of each as much as the page shows (_journal_rows)
        shown = whole if whole is not None else store.journal_heads(
            wid, SPENT_READ, -1, JOURNAL_SHOWN + 1, newest=True)
        complete = whole is not None or len(shown) <= JOURNAL_SHOWN
        timers = [r for r in shown if r.kind == "timer"]
        if whole is None and complete and all(h.whole for h in timers):
            timers = [JournalRecord(h.workflow_id, h.seq, h.kind, h.name, h.outcome(),
                                    h.attempts, h.time) for h in timers]
        elif not complete or whole is None:
            timers = store.journal(wid, kind="timer")
        return {"journal": shown,
                "journal_records": len(shown) if complete else store.journal_size(wid)[0],
                "journal_whole": whole,
                "journal_read": partial(store.journal_heads, wid),
                "timer_records": timers,
                "promises": store.promises(wid),
                "state": store.states(wid), "inbox": store.pending_messages(wid),
                "timers": store.timers(wid), "children": children[:CHILDREN_SHOWN],
                "children_total": children_total,
                "queue": tools.queue_json(store, rec, limits),
                "parent": parent, "node": tools.node_json(store, wid)}

    async def detail(self, workflow_id: str, host: str | None = None) -> dict[str, Any]:
        """Everything about one workflow (``GET /api/workflows/{id}``); the inbox,
        promises and state are cut at their ``*_SHOWN`` limits (their totals say how
        many there are), and each value at :data:`VALUE_SHOWN` bytes (:func:`shown`).
        The statuses are read here, in the trio thread (the node's own); the rest is
        built in a worker thread, where megabytes of a value cost no event loop time."""
        name, store, rec = await self.locate(workflow_id, host)
        pid = self.pid_of(rec, name)
        status = self.status_of(rec, name)
        got = await trio.to_thread.run_sync(partial(
            self._read, store, rec, pid, self._parent_store(rec), self.limits_of(name),
            retryable=status in RETRYABLE))
        children = [(cname, c, self.status_of(c, cname)) for cname, c in got["children"]]
        return await trio.to_thread.run_sync(self._build, name, rec, pid, status, got,
                                             children)

    def _build(self, name: str | None, rec: Any, pid: Pid, status: str,
               got: dict[str, Any], children: list[tuple[str | None, Any, str]]
               ) -> dict[str, Any]:
        """The answer of :meth:`detail`, in a worker thread (no node state read here)."""
        final = status in tools.FINAL
        shown_journal = got["journal"][-JOURNAL_SHOWN:]
        records = got["journal_records"]
        parent = None
        if rec.parent is not None:
            parent_host, parent_rec = got["parent"] or (None, None)
            parent = {"pid": str(rec.parent),
                      "workflow_id": rec.parent.id if parent_rec is not None else None,
                      "host": (parent_host or parent_rec.host) if parent_rec is not None
                      else None}
        promises = sorted(got["promises"], key=lambda p: (str(p.status) != "pending", p.name))
        state = got["state"]
        inbox = got["inbox"]
        # (on a cluster's store, the node that runs it now: where it moved after a
        # takeover or a drain, as garrison workflows show names it)
        workflow = {**tools.record_json(rec), **got["node"],
                    "queue": got["queue"] if status == "pending" else None}
        allowance = Allowance(DETAIL_SHOWN)  # (the workflow's own values first)
        show, text = allowance.show, allowance.text
        workflow.update(status=status, pid=str(pid), host=name or rec.host,
                        input=show(rec.input), result=show(rec.result),
                        error=_shown_error(tools.error_json(rec.error, traceback=True),
                                           allowance),
                        **_mapping_fields("search", rec.search, allowance),
                        **_mapping_fields("memo", rec.memo, allowance))
        # (each name and text within the allowance too: a signal's topic, the name of a
        # send's journal record, have no limit of their own)
        shown_journal_rows = [{"seq": r.seq, "time": _when(r.time), "kind": r.kind,
                               "name": text(r.name), "outcome": show(r.outcome),
                               "attempts": r.attempts, "ok": _outcome_ok(r.outcome)}
                              for r in shown_journal] \
            if got["journal_whole"] is not None \
            else _journal_rows(shown_journal, got["journal_read"], allowance)
        shown_state: dict[str, Any] = {}
        for key in list(state)[:STATE_SHOWN]:
            shown_state.setdefault(allowance.name(key), show(state[key]))
        shown_promises = [{"name": allowance.name(p.name), "status": str(p.status),
                           "value": show(p.value), "error": text(p.error),
                           "created": _when(p.created), "completed": _when(p.completed)}
                          for p in promises[:PROMISES_SHOWN]]
        # (a name cut is not the promise's: its Resolve… would act on another name)
        pending = [p.name for p, row in zip(promises, shown_promises, strict=False)
                   if str(p.status) == "pending" and row["name"] == p.name]
        return {
            "workflow": workflow,
            "journal": shown_journal_rows,
            "journal_records": records,
            "journal_truncated": len(shown_journal) < records,
            "state": shown_state,
            "state_total": len(state),
            "promises": shown_promises,
            "promises_total": len(promises),
            "timers": [] if final else tools.pending_timers(got["timers"],
                                                            got["timer_records"]),
            "inbox": [{"id": m.id, "message_id": m.msg_id, "topic": text(m.topic),
                       "payload": show(m.payload),
                       "sender": str(m.sender) if m.sender else None,
                       "kind": m.kind, "created": _when(m.created)}
                      for m in inbox[:INBOX_SHOWN]],
            "inbox_total": len(inbox),
            "parent": parent,
            "children": [{"workflow_id": c.workflow_id, "name": c.name,
                          "status": cstatus, "host": cname or c.host}
                         for cname, c, cstatus in children],
            "children_total": got["children_total"],
            "actions": {
                "signal": not final,
                "cancel": not final and not rec.cancel_requested,
                "resolve": [] if final else pending,
                "retry": status in RETRYABLE,
                # (a retry that would replay to the same failure is said, not refused,
                # as garrison workflows retry says it)
                "retry_note": text(tools.retry_note(rec, got["journal_whole"]))
                if status in RETRYABLE and got["journal_whole"] is not None else None,
            },
        }

    # -- actions -------------------------------------------------------------------------
    async def _acting_on(self, workflow_id: str, what: str, host: str | None) -> str | None:
        """The host of a workflow an action may act on: 404 unknown, 409 finished."""
        name, _, rec = await self.locate(workflow_id, host)
        status = self.status_of(rec, name)
        if status in tools.FINAL:
            raise ApiError(409, f"cannot {what} workflow {workflow_id!r}: it is {status}")
        return name

    async def _retryable(self, workflow_id: str, host: str | None) -> str | None:
        name, _, rec = await self.locate(workflow_id, host)
        status = self.status_of(rec, name)
        if status not in RETRYABLE:
            raise ApiError(409, f"cannot retry workflow {workflow_id!r}: it is {status} (only "
                                "a failed or blocked workflow can be retried)")
        return name

    async def signal(self, workflow_id: str, topic: str, payload: Any,
                     host: str | None = None) -> dict[str, Any]:
        """Send the workflow a message."""
        raise NotImplementedError

    async def resolve(self, workflow_id: str, promise: str, value: Any,
                      host: str | None = None) -> None:
        """Resolve the workflow's promise."""
        raise NotImplementedError

    async def reject(self, workflow_id: str, promise: str, message: str,
                     host: str | None = None) -> None:
        """Reject the workflow's promise."""
        raise NotImplementedError

    async def cancel(self, workflow_id: str, host: str | None = None) -> None:
        """Ask the workflow to cancel."""
        raise NotImplementedError

    async def retry(self, workflow_id: str, host: str | None = None) -> str:
        """Resume a failed or blocked workflow by replay from its journal; what happens,
        in words."""
        raise NotImplementedError

    def node_view(self) -> dict[str, Any]:
        """Live processes, services and the supervision tree (``GET /api/node``)."""
        raise ApiError(404, "the console is not attached to a running node (start it with "
                            "garrison run CONFIG --ui ADDRESS to see processes and services)")


class StoreBackend(Backend):
    """A store opened as a tool (``lock=False``), with or without a node holding it;
    or opened read-only (a SQLite file on a read-only file system, or one this process
    may not write: see ``_store_tools.open_store``), whose actions are refused (409)."""

    def __init__(self, store: Any, *, owned: bool = False) -> None:
        self.store = store
        self._owned = owned
        self.read_only = bool(getattr(store, "readonly", False))
        #: the actions' worker threads: a few at a time (a stalled database holds up
        #: these, not the threads the reads and static files take)
        self._actions = trio.CapacityLimiter(ACTIONS_AT_ONCE)

    def close(self) -> None:
        if self._owned:
            self.store.close()

    async def signal(self, workflow_id: str, topic: str, payload: Any,
                     host: str | None = None) -> dict[str, Any]:
        self._writable(workflow_id, "signal")
        await self._acting_on(workflow_id, "signal", host)
        msg_id = await self._tool(tools.signal, workflow_id, topic, payload)
        return {"message_id": msg_id}

    async def resolve(self, workflow_id: str, promise: str, value: Any,
                      host: str | None = None) -> None:
        self._writable(workflow_id, "resolve a promise of")
        await self._acting_on(workflow_id, "resolve a promise of", host)
        await self._tool(tools.resolve, workflow_id, promise, value)

    async def reject(self, workflow_id: str, promise: str, message: str,
                     host: str | None = None) -> None:
        self._writable(workflow_id, "reject a promise of")
        await self._acting_on(workflow_id, "reject a promise of", host)
        await self._tool(tools.reject, workflow_id, promise, message)

    async def cancel(self, workflow_id: str, host: str | None = None) -> None:
        self._writable(workflow_id, "cancel")
        await self._acting_on(workflow_id, "cancel", host)
        await self._tool(tools.cancel, workflow_id)

    async def retry(self, workflow_id: str, host: str | None = None) -> str:
        self._writable(workflow_id, "retry")
        await self._retryable(workflow_id, host)
        note: str = await self._tool(tools.retry, workflow_id)
        return note

    def _writable(self, workflow_id: str, what: str) -> None:
        """409 for an action on a store open read-only (before anything is read: its
        write would fail, and SQLite's words say neither why nor which store)."""
        if self.read_only:
            raise ApiError(409, f"cannot {what} workflow {workflow_id!r}: store "
                                f"{self.store.path!r} is open read-only (as a file on a "
                                "read-only file system, or one this process may not "
                                "write, is opened): the console shows its workflows and "
                                "changes nothing")

    async def _tool(self, fn: Any, *args: Any) -> Any:
        """``fn(store, *args)`` (a function of ``garrison._store_tools``) in a worker
        thread: a write that waits for the database (another process holding SQLite's
        write lock, a locked PostgreSQL table) holds up this request, not the console."""
        try:
            return await run_blocking(partial(fn, self.store, *args), limiter=self._actions)
        except tools.ToolError as exc:
            raise ApiError(409 if exc.code == 1 else 400, str(exc)) from None
        except NoSuchWorkflow as exc:  # deleted between our read and our write
            raise ApiError(404, str(exc)) from None


class NodeBackend(Backend):
    """Attached to a running node: every durable workflow host, live statuses and
    data; actions through its API. ``host``: the default host (see the module)."""

    live = True

    def __init__(self, node: Any, host: str | None = None) -> None:
        self.node = node
        self._hosts = {name: h for name, h in node.hosts.items()
                       if getattr(h, "durable", False)}
        if host is None:
            first = workflow_host(node, None)  # the host ``workflows`` names
            host = first.name
            if first.store.path is None:  # in memory: show a host whose store persists
                host = next((name for name, h in self._hosts.items()
                             if h.store.path is not None), host)
        else:
            host = workflow_host(node, host).name
        self.default = host
        self.store = self._hosts[host].store

    def running(self) -> None:
        """503 once the node stops: its stores close with it, and a read or an action
        on them would fail deep inside (a 500 with nothing said)."""
        if self.node.stopped:
            raise ApiError(503, "the node this console is attached to has stopped (its "
                                "stores are closed); start it again, or open its store "
                                "with: garrison ui --store PATH")

    def stores(self) -> dict[str | None, Any]:
        self.running()
        return {name: h.store for name, h in self._hosts.items()}

    def store_of(self, host: str | None) -> tuple[str | None, Any]:
        if host is not None and host not in self._hosts:
            try:  # an alias: ``workflows`` for a config's only workflow host
                host = workflow_host(self.node, host).name
            except ValueError:
                pass
        return super().store_of(host)

    def limits_of(self, host: str | None) -> dict[str, Any] | None:
        """The node's config of the host's queue (its limits), for a pending workflow's
        reason to wait."""
        h = self._hosts.get(host) if host is not None else None
        queue = getattr(h, "queue", None)
        if queue is None:
            return None
        limits = queue.limits
        return {"max_concurrent": limits.max_concurrent,
                "cluster_max_concurrent": limits.cluster_max_concurrent,
                "rate": limits.rate, "starts": list(limits.starts or ()) or None}

    def status_of(self, rec: Any, host: str | None) -> str:
        """The node's own status of a workflow it runs (or has just finished), else
        the store's (a workflow queued, or another node's)."""
        h = self._hosts[host] if host is not None else None
        if h is not None:
            wf = h.active.get(rec.workflow_id)
            if wf is not None:
                return str(wf.status)
            done = h.finished.get(rec.workflow_id)
            if done is not None:
                return str(done[0])
        return str(rec.status)

    def _handle(self, workflow_id: str, host: str | None) -> Any:
        return self.node.workflow(workflow_id, host=host)

    async def signal(self, workflow_id: str, topic: str, payload: Any,
                     host: str | None = None) -> dict[str, Any]:
        name = await self._acting_on(workflow_id, "signal", host)
        # (not WorkflowHandle.signal: the workflow may finish between the status read
        # above and the delivery, and the message would be a dead letter, answered 200)
        if not await self._hosts[self.default if name is None else name].signal_delivered(
                workflow_id, topic, payload):
            raise ApiError(409, f"cannot signal workflow {workflow_id!r}: it finished "
                                "before the message was delivered")
        return {}

    async def resolve(self, workflow_id: str, promise: str, value: Any,
                      host: str | None = None) -> None:
        name = await self._acting_on(workflow_id, "resolve a promise of", host)
        try:
            await self._handle(workflow_id, name).promise(promise).resolve(value)
        except PromiseAlreadyCompleted as exc:
            raise ApiError(409, str(exc)) from None
        except ValueError as exc:  # a name no workflow can declare (too long)
            raise ApiError(400, str(exc)) from None

    async def reject(self, workflow_id: str, promise: str, message: str,
                     host: str | None = None) -> None:
        name = await self._acting_on(workflow_id, "reject a promise of", host)
        try:
            await self._handle(workflow_id, name).promise(promise).reject(message)
        except PromiseAlreadyCompleted as exc:
            raise ApiError(409, str(exc)) from None
        except ValueError as exc:  # a name no workflow can declare (too long)
            raise ApiError(400, str(exc)) from None

    async def cancel(self, workflow_id: str, host: str | None = None) -> None:
        name = await self._acting_on(workflow_id, "cancel", host)
        await self._handle(workflow_id, name).cancel()

    async def retry(self, workflow_id: str, host: str | None = None) -> str:
        name = await self._retryable(workflow_id, host)
        try:
            note: str = await self._handle(workflow_id, name).retry()
            return note
        except ValueError as exc:  # its status changed meanwhile
            raise ApiError(409, str(exc)) from None

    def node_view(self) -> dict[str, Any]:
        self.running()
        node = self.node
        stats = {key: str(value) if isinstance(value, Pid) else value
                 for key, value in node.stats().items()}
        services = node.services()
        service_of = {str(s.pid): s.id for s in services if s.pid is not None}
        # only what the page shows is built (a node may run 100,000 processes): the
        # first PROCESSES_SHOWN snapshots, and the tree from every (pid, parent) pair,
        # a snapshot only for the processes it shows. The table lists the workflows
        # running or parked here after the processes, and counts them as the stats'
        # "processes" do (a workflow is a process of its host: it may hold the
        # largest inbox); the tree is the processes' only. A workflow's row names its
        # id and host: the page links it to the workflow's page, as the list does
        hosts = [h for h in node.hosts.values() if hasattr(h, "process_infos")]
        total = sum(h.live_count() for h in node.hosts.values())
        infos: list[tuple[Any, str | None]] = []  # (snapshot, workflow host or None)
        for h in hosts:
            if len(infos) >= PROCESSES_SHOWN:
                break
            infos.extend((i, None) for i in h.process_infos(PROCESSES_SHOWN - len(infos)))
        for name, h in self._hosts.items():
            if len(infos) >= PROCESSES_SHOWN:
                break
            infos.extend((i, name) for i in h.workflow_infos(PROCESSES_SHOWN - len(infos)))
        rows = [{"pid": str(i.pid), "label": i.label,
                 "parent": str(i.parent) if i.parent else None,
                 "service": service_of.get(str(i.pid)),
                 "queued": i.queued, "events": i.events, "names": list(i.names),
                 "links": sorted(map(str, i.links)), "monitors": sorted(map(str, i.monitors)),
                 "trap_links": i.trap_links,
                 "workflow_id": i.pid.id if host is not None else None, "host": host}
                for i, host in infos]
        pairs = [pair for h in hosts for pair in h.process_parents()]
        live = {pid for pid, _ in pairs}
        children: dict[Pid | None, list[Pid]] = {}
        for pid, parent in pairs:
            children.setdefault(parent if parent in live else None, []).append(pid)
        known = {i.pid: i for i, _ in infos}

        def info_of(pid: Pid) -> Any:
            info = known.get(pid)
            if info is None:
                info = node.hosts[pid.host].process_info(pid)
            return info

        # iterative (a chain of spawns may be deeper than Python's recursion limit)
        roots: list[dict[str, Any]] = []
        stack: list[tuple[Pid | None, list[dict[str, Any]]]] = [(None, roots)]
        budget = PROCESSES_SHOWN
        while stack and budget > 0:
            parent, into = stack.pop()
            for pid in children.get(parent, ())[:budget]:
                budget -= 1
                info = info_of(pid)
                node_row = {"pid": str(pid), "label": info.label,
                            "service": service_of.get(str(pid)), "queued": info.queued,
                            "children": []}
                into.append(node_row)
                stack.append((pid, node_row["children"]))

        return {
            "node": {"store": self.store.path, "hosts": sorted(node.hosts),
                     "workflow_hosts": {name: h.store.path for name, h in self._hosts.items()}},
            "stats": stats,
            "services": [{"id": s.id, "status": str(s.status),
                          "pid": str(s.pid) if s.pid else None, "restarts": s.restarts,
                          "last_error": str(s.last_error) if s.last_error else None}
                         for s in services],
            "processes": rows,
            "processes_total": total,
            "tree": roots,
        }
