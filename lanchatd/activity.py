"""The daemon's activity log: a ring in memory and a size-rotated file of JSON lines.

Theory of operation
-------------------
Every event the daemon wants an administrator to see (start and stop, state changes,
connects, joins, leaves, kicks, closed rooms, refused joins, protocol errors, admin
actions with who did them) becomes one *entry*: a flat dict ``{"seq", "ts", "time",
"event", **fields}``.  ``seq`` counts from 1 in each run of the daemon and never skips,
so a reader (``lanchatctl log --follow``) can ask for "everything after N" and notice
gaps.  ``ts`` is the Unix time (seconds, for programs) and ``time`` the same instant as
an RFC 3339 UTC time with milliseconds (``2026-12-01T09:15:02.431Z``), so that the file
is an audit trail a person or a log tool reads without converting.

An entry goes three places, in this order:

1. the ring, a bounded deque that ``tail()`` and ``since()`` read;
2. the file, through a queue of lines not yet written (see below);
3. the subscribers, plain callbacks that the control socket uses to stream entries.

The file is written with ``logging.handlers.RotatingFileHandler``, driven directly: we
call its ``emit_lines`` ourselves, and the logger tree (root logger, ``basicConfig``,
propagation) is never involved.  The handler opens the file, decides nothing about
errors, and rotates with the standard ``activity.log.1 ... .N`` names.  Our subclass
changes how lines reach the disk: it writes the encoded lines with ``os.write`` on the
file's descriptor instead of through the text buffer, as many queued lines with one
write as fit in the file before its next rotation (each rotation falls where writing the
lines one by one would put it).  That is what makes a failed write undoable: when a
write stops half-way (disk full, file size limit), we know the size the file had before
it and cut it back with ``ftruncate``, so the file never holds half a record and a later
retry never writes a piece twice.  Errors are raised to us, never passed to
``handleError`` (which would print a traceback).

``record()`` writes at once; the daemon's loop sets ``batched`` and calls ``flush()`` at
the end of each pass, before the pass's output is sent, so the entries of a pass (a
crowd's connects and joins) cost one write and one ``fstat``, and a client that got an
answer finds its entry in the file.

Faults of the host.  A line that cannot be written stays first in the queue, and the
daemon carries on: the entry is already in the ring and with the subscribers.  The first
failure of an outage is said once on stderr, with the file and the OS error.  ``record()``
tries again at most once a second (of the ``now`` it is given) and ``retry()``, which the
loop calls about once a second, tries every time; each try reopens the file and recreates
its directory if it vanished.  When the queue is empty again, stderr says once that
writing resumed.  The queue holds at most ``max_pending`` records; past that, newer records
are dropped from the file only (they remain in the ring while it holds them), and the file
gets one ``activity_log_records_lost`` line, without a ``seq`` of its own, at the place
of the gap, naming how many records and which sequence numbers are missing.

A file that was deleted while open (its link count is 0: someone removed the directory
or the file) is noticed before each write and replaced, so no record goes into a deleted
file.  A file that was *moved* (logrotate) is kept until ``reopen()``, which the daemon
calls on SIGHUP, as logrotate expects.

Writing past ``RLIMIT_FSIZE`` raises SIGXFSZ, which kills a process by default; the loop
ignores that signal at start, and the write then fails with EFBIG like any other fault.

The daemon is single-threaded, so nothing here takes a lock.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import itertools
import json
import logging
import logging.handlers
import math
import os
import stat
import sys
from collections import deque
from collections.abc import Callable
from io import TextIOWrapper
from typing import Any, TextIO

Entry = dict[str, Any]

#: Records waiting for the file, at most; past this, the file misses records (counted).
MAX_PENDING = 100_000
#: Seconds between two write attempts made by ``record()`` while the file is failing.
RETRY_INTERVAL = 1.0
#: Event name of the line that stands for records the file lost.
RECORDS_LOST_EVENT = "activity_log_records_lost"

_DIR_MODE = 0o750
_FILE_MODE = 0o640
_RESERVED = ("seq", "ts", "time", "event")
_RESERVED_SET = frozenset(_RESERVED)
# json.dumps(ensure_ascii=False) leaves these raw, and str.splitlines() breaks lines on
# them; escaped, a record stays one line for every reader.  They can occur only inside
# JSON strings, where the \\u form means the same character.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def rfc3339(ts: float) -> str:
    """``ts`` (Unix seconds) as an RFC 3339 UTC time with milliseconds."""
    try:
        moment = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""  # not a time a calendar holds; ts still says what was given
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opener(path: str, flags: int) -> int:
    return os.open(path, flags, _FILE_MODE)


class _RotatingFile(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that writes each line whole or not at all, and raises on failure.

    Rotation (the ``.1 ... .N`` renames) is the base class's ``doRollover``.  The size test
    is ours: it counts bytes, not characters, and never rotates an empty file.  A max size
    of 0 means no limit.  A backup count of 0 (the base class would then let the file
    grow without end, silently) keeps no old file: the full file is emptied and starts
    again, so the log never takes more than the max size, and ``on_emptied`` is told.
    """

    def __init__(self, path: str, max_bytes: int, backups: int,
                 on_replaced: Callable[[str], None],
                 on_emptied: Callable[[str, int], None]) -> None:
        super().__init__(path, mode="a", maxBytes=max_bytes, backupCount=backups,
                         encoding="utf-8", delay=True)
        self._on_replaced = on_replaced
        self._on_emptied = on_emptied
        # The open file may end in the middle of a line (a crash, or a cut that failed):
        # then the next line starts with a newline so that it stands on its own.
        self._needs_newline = False

    def _open(self) -> TextIOWrapper:
        # The handler keeps the file open between records, so no `with` here.  Mode a+
        # so that the last byte can be read back; writes go to the end all the same.
        try:
            stream = open(self.baseFilename, "a+", encoding="utf-8", opener=_opener)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.baseFilename), mode=_DIR_MODE, exist_ok=True)
            stream = open(self.baseFilename, "a+", encoding="utf-8", opener=_opener)
        try:
            fd = stream.fileno()
            st = os.fstat(fd)
            self._needs_newline = (stat.S_ISREG(st.st_mode) and st.st_size > 0
                                   and os.pread(fd, 1, st.st_size - 1) != b"\n")
        except OSError:
            stream.close()
            raise
        return stream

    def close_stream(self) -> None:
        """Close the file (nothing is buffered: lines go straight to the descriptor)."""
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    def _current(self) -> tuple[TextIOWrapper, os.stat_result]:
        if self.stream is not None:
            st = os.fstat(self.stream.fileno())
            if st.st_nlink > 0:
                return self.stream, st
            self.close_stream()
            self._on_replaced(self.baseFilename)
        self.stream = self._open()
        return self.stream, os.fstat(self.stream.fileno())

    def handleError(self, record: logging.LogRecord) -> None:
        # The base classes would print a traceback to stderr; the caller handles errors.
        exc = sys.exc_info()[1]
        if exc is not None:
            raise exc

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record's line; raise OSError, with the file unchanged, if that fails."""
        self.emit_lines([self.format(record)], 0)

    def emit_lines(self, lines: list[str], start: int) -> int:
        """Append ``lines[start:]`` with one write, as far as the size limit allows
        them in the current file; the number written.  Raise OSError, with the file
        unchanged, if the write fails.

        Where each line goes is what writing them one by one would give: the file is
        rotated (or emptied) before a line that would take a non-empty file past
        ``maxBytes``, and the write stops before the first line that would, so no
        file ever holds more than one line past its limit (a line longer than the
        limit alone in a file) and the next call rotates.  Bytes are counted, not
        characters.  A max size of 0 means no limit.
        """
        first = (lines[start] + self.terminator).encode("utf-8")
        stream, st = self._current()
        if (self.maxBytes > 0 and stat.S_ISREG(st.st_mode)
                and st.st_size > 0 and st.st_size + len(first) > self.maxBytes):
            if self.backupCount > 0:
                self.doRollover()
            else:
                os.ftruncate(stream.fileno(), 0)
                self._needs_newline = False
                self._on_emptied(self.baseFilename, st.st_size)
            stream, st = self._current()
        parts = [b"\n", first] if self._needs_newline else [first]
        size = st.st_size + sum(map(len, parts))
        limit = self.maxBytes if self.maxBytes > 0 and stat.S_ISREG(st.st_mode) else 0
        end = start + 1
        while end < len(lines):
            data = (lines[end] + self.terminator).encode("utf-8")
            if limit and size + len(data) > limit:
                break
            parts.append(data)
            size += len(data)
            end += 1
        data = b"".join(parts)
        fd = stream.fileno()
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, os.strerror(errno.EIO), self.baseFilename)
                view = view[written:]
        except OSError:
            if len(view) < len(data) and stat.S_ISREG(st.st_mode):
                # If this fails the partial lines stay; the next file opened then
                # starts with a newline, so the records that follow are whole.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, st.st_size)
            self.close_stream()
            raise
        self._needs_newline = False
        return end - start


class _Gap:
    """Records the queue had no room for: written to the file as one line in their place."""

    __slots__ = ("count", "first_seq", "last_seq", "ts")

    def __init__(self, seq: int, ts: float) -> None:
        self.first_seq = self.last_seq = seq
        self.count = 1
        self.ts = ts

    def line(self) -> str:
        return json.dumps({"ts": self.ts, "time": rfc3339(self.ts),
                           "event": RECORDS_LOST_EVENT, "count": self.count,
                           "first_seq": self.first_seq, "last_seq": self.last_seq},
                          separators=(",", ":"))


def _check_sizes(ring_size: int, max_bytes: int, backups: int) -> None:
    for name, value in (("ring_size", ring_size), ("max_bytes", max_bytes),
                        ("backups", backups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"activity log {name} must be an integer >= 0, not {value!r}")


def _dump(entry: Entry, ensure_ascii: bool) -> tuple[str, bool]:
    """JSON text of ``entry`` and whether a value had to be converted with str()."""
    converted = False

    def as_text(value: object) -> str:
        nonlocal converted
        converted = True
        return str(value)

    text = json.dumps(entry, ensure_ascii=ensure_ascii, separators=(",", ":"),
                      default=as_text)
    return text, converted


# The usual entry holds JSON types only: one encoder for all of them (json.dumps with
# its str() fallback makes a new encoder per call: a fifth of an entry's cost).
_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _c_encoder() -> Callable[[Entry, int], tuple[str, ...]] | None:
    """The C encoder behind ``_json_encoder``, made once: ``JSONEncoder.encode`` makes
    a new one for every call (a third of an entry's encoding).  Its circular-reference
    markers are a dict it empties as it returns; after a failure they may hold stale
    ids, so a failure makes a new encoder (``_encode``)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return None
    made: Callable[[Entry, int], tuple[str, ...]] = make(
        {}, _json_encoder.default, json.encoder.encode_basestring, None, ":", ",",
        False, False, True)
    return made


_c_encode = _c_encoder()


def _encode(entry: Entry) -> tuple[str, bool]:
    global _c_encode
    try:
        if _c_encode is not None:
            text, converted = "".join(_c_encode(entry, 0)), False
        else:
            text, converted = _json_encoder.encode(entry), False
    except (TypeError, ValueError, RecursionError) as exc:
        _c_encode = _c_encoder()  # its markers may keep the failed entry's ids
        if not isinstance(exc, TypeError):
            raise
        # A value that is not JSON: written as its str()
        text, converted = _dump(entry, ensure_ascii=False)
    if text.isascii():
        return text, converted
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (undecodable bytes kept by surrogateescape) has no UTF-8 form;
        # the \\u escapes of ensure_ascii keep the line valid and lose nothing.
        text, converted = _dump(entry, ensure_ascii=True)
    return text.translate(_LINE_BREAKS), converted


class ActivityLog:
    """The ring, the file and the subscribers of the daemon's activity log."""

    def __init__(self, *, ring_size: int = 1000, path: str | None = None,
                 max_bytes: int = 1048576, backups: int = 5, stderr: TextIO | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        _check_sizes(ring_size, max_bytes, backups)
        if max_pending < 1:
            raise ValueError(f"activity log max_pending must be >= 1, not {max_pending!r}")
        self._ring: deque[Entry] = deque(maxlen=ring_size)
        self._seq = 0
        self._stderr = stderr
        self._subscribers: dict[int, Callable[[Entry], None]] = {}
        self._subscriber_ids = itertools.count(1)
        self._file: _RotatingFile | None = None
        if path is not None:
            self._file = _RotatingFile(path, max_bytes, backups, self._file_replaced,
                                       self._file_emptied)
        # Lines not yet in the file, oldest first, and gaps where the queue was full.
        self._pending: deque[str | _Gap] = deque()
        self._pending_records = 0
        self._max_pending = max_pending
        self._now = 0.0
        #: While true, ``record`` leaves the file to ``flush``: the daemon's loop writes
        #: the entries of a pass together at its end, with one write where the size
        #: limit allows (an entry written alone cost a quarter of a join).
        self.batched = False
        self._time: tuple[float, str] = (math.nan, "")  # the last ts and its RFC 3339 form
        # The current outage, if any: what was said on stderr and what it cost.
        self._failing = False
        self._next_attempt = 0.0
        self._reported: set[int | None] = set()
        self._said_full = False
        self._delayed = 0
        self._lost = 0

    @property
    def path(self) -> str | None:
        """Absolute path of the file, or None when the log is kept in memory only."""
        return None if self._file is None else self._file.baseFilename

    @property
    def last_seq(self) -> int:
        return self._seq

    def record(self, now: float, event: str, **fields: Any) -> Entry:
        """Record one event at time ``now``; return its entry.

        Field values should be JSON types; anything else (an address object, say) is
        stored and written as its str().  Raises ValueError, and records nothing, if a
        field is named seq or ts or cannot be written as JSON (a circular structure).
        """
        if not _RESERVED_SET.isdisjoint(fields):
            for name in _RESERVED:
                if name in fields:
                    raise ValueError(f"activity log field name {name!r} is reserved")
        if now != self._time[0]:  # the entries of a pass share their time
            self._time = (now, rfc3339(now))
        entry: Entry = {"seq": self._seq + 1, "ts": now, "time": self._time[1],
                        "event": event, **fields}
        line, converted = _encode(entry)
        if converted:
            entry = json.loads(line)
        self._seq += 1
        self._now = now
        self._ring.append(entry)
        if self._file is not None:
            if self._pending_records >= self._max_pending and self._may_try(now):
                self._flush(now)
            self._enqueue(entry, line, now)
            if not self.batched and self._may_try(now):
                self._flush(now)
        if self._subscribers:
            self._notify(entry)
        return entry

    def flush(self) -> None:
        """Write what ``record`` queued (while ``batched``), as a record would have."""
        if self._file is not None and self._pending and self._may_try(self._now):
            self._flush(self._now)

    def tail(self, n: int | None = None) -> list[Entry]:
        """The last ``n`` entries in the ring (all of them if None), oldest first."""
        if n is None:
            return list(self._ring)
        if n <= 0:
            return []
        return list(itertools.islice(self._ring, max(0, len(self._ring) - n), None))

    def since(self, seq: int) -> list[Entry]:
        """Entries with a sequence number above ``seq`` still in the ring, oldest first."""
        if not self._ring:
            return []
        start = max(0, seq - self._ring[0]["seq"] + 1)
        return list(itertools.islice(self._ring, start, None))

    def subscribe(self, callback: Callable[[Entry], None]) -> Callable[[], None]:
        """Call ``callback`` with each new entry; return the function that stops it.

        A callback that raises is removed, and that is said on stderr; the exception
        never reaches the caller of ``record()``.
        """
        key = next(self._subscriber_ids)
        self._subscribers[key] = callback

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)

        return unsubscribe

    def reconfigure(self, *, ring_size: int, max_bytes: int, backups: int) -> None:
        """Apply new sizes (on reload); the newest entries that fit stay in the ring."""
        _check_sizes(ring_size, max_bytes, backups)
        if ring_size != self._ring.maxlen:
            self._ring = deque(self._ring, maxlen=ring_size)
        if self._file is not None:
            self._file.maxBytes = max_bytes
            self._file.backupCount = backups

    def reopen(self) -> None:
        """Close the file; the next write opens the path afresh (after logrotate moved it)."""
        if self._file is not None:
            self._file.close_stream()
            self._next_attempt = self._now

    def retry(self, now: float) -> None:
        """Try again to write what is waiting (the loop calls this about once a second)."""
        self._now = now
        if self._file is not None and self._pending:
            self._flush(now)

    def pending(self) -> int:
        """Records not yet written to the file."""
        return self._pending_records

    def close(self) -> None:
        """Write what can be written, say on stderr what could not, and close the file."""
        if self._file is None:
            return
        if self._pending:
            self._flush(self._now)
        if self._pending_records:
            self._say(f"lanchatd: activity log {self._file.baseFilename}: "
                      f"{self._pending_records} record(s) could not be written and are lost")
            self._pending.clear()
            self._pending_records = 0
        self._file.close()

    # -- the file's queue ------------------------------------------------------------

    def _may_try(self, now: float) -> bool:
        return not self._failing or now >= self._next_attempt

    def _enqueue(self, entry: Entry, line: str, now: float) -> None:
        if self._pending_records < self._max_pending:
            self._pending.append(line)
            self._pending_records += 1
            return
        self._lost += 1
        last = self._pending[-1]
        if isinstance(last, _Gap):
            last.count += 1
            last.last_seq = entry["seq"]
        else:
            self._pending.append(_Gap(entry["seq"], now))
        if not self._said_full:
            self._said_full = True
            self._say(f"lanchatd: activity log {self.path}: {self._max_pending} records are "
                      "waiting to be written; newer ones will be missing from the file "
                      "(a line there will count them)")

    def _flush(self, now: float) -> None:
        assert self._file is not None
        pending = self._pending
        lines = [item if isinstance(item, str) else item.line() for item in pending]
        done = 0
        try:
            while done < len(lines):
                done += self._file.emit_lines(lines, done)
        except OSError as exc:
            self._written(done)
            self._failed(now, exc)
            return
        self._written(done)
        if self._failing:
            self._resumed()

    def _written(self, count: int) -> None:
        """The first ``count`` queued items are in the file."""
        pending = self._pending
        for _ in range(count):
            if isinstance(pending.popleft(), str):
                self._pending_records -= 1
                if self._failing:
                    self._delayed += 1

    def _failed(self, now: float, exc: OSError) -> None:
        self._failing = True
        self._next_attempt = now + RETRY_INTERVAL
        if exc.errno in self._reported:
            return
        self._reported.add(exc.errno)
        if exc.errno is not None:
            reason = f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})"
        else:
            reason = str(exc)
        where = ""
        if exc.filename is not None and os.fspath(exc.filename) != self.path:
            where = f" at {os.fsdecode(exc.filename)}"
        self._say(f"lanchatd: cannot write the activity log {self.path}: {reason}{where}; "
                  "records are kept in memory and the write is retried")

    def _resumed(self) -> None:
        lost = f", {self._lost} lost (the queue was full)" if self._lost else ""
        self._say(f"lanchatd: activity log {self.path}: writing resumed; "
                  f"{self._delayed} delayed record(s) written{lost}")
        self._failing = False
        self._reported.clear()
        self._said_full = False
        self._delayed = 0
        self._lost = 0

    def _file_emptied(self, path: str, size: int) -> None:
        self._say(f"lanchatd: activity log {path} reached log_max_bytes ({size} bytes) and, "
                  "with log_backups = 0, was emptied: its older entries are gone")

    def _file_replaced(self, path: str) -> None:
        self._say(f"lanchatd: activity log {path} was deleted while open; "
                  "writing to a new file at that path")

    # -- subscribers and stderr ------------------------------------------------------

    def _notify(self, entry: Entry) -> None:
        for key, callback in list(self._subscribers.items()):
            if key not in self._subscribers:
                continue  # unsubscribed by an earlier callback for this same entry
            try:
                callback(entry)
            except Exception as exc:
                self._subscribers.pop(key, None)
                name = getattr(callback, "__qualname__", repr(callback))
                self._say(f"lanchatd: activity log subscriber {name} failed "
                          f"({type(exc).__name__}: {exc}) and was removed")

    def _say(self, line: str) -> None:
        stream = self._stderr if self._stderr is not None else sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # no stderr left to complain to; the daemon carries on
