"""The control channel between the server and one instance process.

Messages are tuples of plain values over a Unix socket pair
(``multiprocessing.connection`` framing), serialized with ``marshal`` (several
times faster than pickle for such values; anything marshal refuses goes as a
pickle). Every message carries the block
releases its sender owes, and new shared-memory segments are announced (with
their file descriptor, passed as SCM_RIGHTS) before the first message that
points into them. One thread reads; any thread may send.
"""
from __future__ import annotations

import marshal
import pickle
import select
import socket
import threading
import time
from multiprocessing import reduction
from multiprocessing.connection import Connection

from .transport import Transport

SEGMENT = "seg"
_MARSHAL, _PICKLE = b"M", b"P"


def dumps(message) -> bytes:
    try:
        return _MARSHAL + marshal.dumps(message)
    except ValueError:
        return _PICKLE + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes, pickle_ok: bool):
    body = memoryview(data)[1:]
    if data[:1] == _MARSHAL:
        return marshal.loads(body)
    if not pickle_ok:  # the server never unpickles what a model's process sends
        raise ValueError("unexpected pickled message")
    return pickle.loads(body)
# A release that found no message to ride on goes out on its own after this.
RELEASE_FLUSH_SECS = 0.002


class Channel:
    """``pickle_ok``: whether the peer may send pickles (the server's messages may; the
    instance process's may not: unpickling runs code)."""

    def __init__(self, fd: int, transport: Transport, pickle_ok: bool = False):
        self.pickle_ok = pickle_ok
        self.connection = Connection(fd)
        self.transport = transport
        self._send_lock = threading.Lock()
        self._closed = False
        self._deferred = None
        self._flusher = threading.Thread(target=self._flush_releases, daemon=True,
                                         name="shm-release-flush")
        self._flusher.start()

    def send(self, message: tuple) -> None:
        transport = self.transport
        with self._send_lock:
            if self._closed:
                raise EOFError("channel closed")
            announcements = transport.own.take_announcements()
            for segment_id, fd, size in announcements:
                self.connection.send_bytes(dumps((SEGMENT, segment_id, size)))
                reduction.send_handle(self.connection, fd, 0)
            self.connection.send_bytes(dumps((transport.drain_releases(), message)))

    def recv(self) -> tuple:
        """The next message; segment announcements are handled here.

        The releases that came with it are applied by :meth:`apply_releases`
        after the message is handled (or at the next ``recv``): the message may
        point into a block its sender has just released.
        """
        connection = self.connection
        transport = self.transport
        self.apply_releases()
        while True:
            item = loads(connection.recv_bytes(), self.pickle_ok)
            if item[0] == SEGMENT:
                fd = reduction.recv_handle(connection)
                transport.peer.add(item[1], fd, item[2])
                continue
            releases, message = item
            self._deferred = releases
            return message

    def apply_releases(self) -> None:
        if self._deferred:
            releases, self._deferred = self._deferred, None
            self.transport.apply_releases(releases)

    def _flush_releases(self) -> None:
        releases = self.transport.releases
        while not self._closed:
            item = releases.get()
            releases.put(item)  # back in line: the next message may still carry it
            time.sleep(RELEASE_FLUSH_SECS)
            try:
                if not releases.empty():
                    self.send(("release",))
            except (OSError, EOFError, ValueError):
                return

    def shutdown(self) -> None:
        """Make the socket read as ended on both sides (wakes a thread waiting on it)."""
        try:
            with socket.fromfd(self.connection.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        with self._send_lock:
            self._closed = True
        self.transport.releases.put(("own", -1, -1))  # wake the flusher
        try:
            self.connection.close()
        except OSError:
            pass


def socket_pair() -> tuple[int, int]:
    """(server end, instance end) file descriptors; the instance end is inheritable."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.set_inheritable(True)
    return ours.detach(), theirs.detach()


class ReadRole:
    """Who reads the channel: a thread waiting for an answer reads it itself.

    A thread hand-off costs tens of microseconds, more than the rest of a small
    request's trip, so the thread that sent an ``exec`` (or is idle, in the
    instance process) takes the read role and dispatches what arrives until its
    answer is there. When no thread holds the role, a watcher thread (woken by
    epoll, armed only while the role is free) reads instead: decoupled
    responses, BLS requests and log lines arrive at any time.
    """

    def __init__(self, channel: Channel, dispatch, on_eof, name: str):
        self.channel = channel
        self.dispatch = dispatch
        self.on_eof = on_eof
        self._lock = threading.Lock()
        self._fd = channel.connection.fileno()
        self._epoll = select.epoll()
        self._epoll.register(self._fd, select.EPOLLIN | select.EPOLLONESHOT)  # free: armed
        self._closed = False
        self._watcher = threading.Thread(target=self._watch, daemon=True, name=name)
        self._watcher.start()

    def claim(self, timeout: float = -1) -> bool:
        """Take the read role (False if another thread keeps it past ``timeout``)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._epoll.modify(self._fd, 0)
        except (OSError, ValueError):
            pass
        return True

    def release(self) -> None:
        try:
            self._epoll.modify(self._fd, select.EPOLLIN | select.EPOLLONESHOT)
        except (OSError, ValueError):
            pass
        self._lock.release()

    def read_one(self) -> None:
        """Receive and dispatch one message (the caller holds the role); EOF -> on_eof."""
        try:
            message = self.channel.recv()
        except (EOFError, OSError):
            self._eof()
            raise EOFError("instance channel closed") from None
        except Exception:  # garbled or refused message: the peer cannot be trusted any more
            self.channel.shutdown()
            self._eof()
            raise EOFError("instance channel sent an unreadable message") from None
        self.dispatch(message)
        self.channel.apply_releases()

    def _eof(self) -> None:
        if not self._closed:
            self._closed = True
            self.on_eof()

    def _watch(self) -> None:
        epoll = self._epoll
        connection = self.channel.connection
        while not self._closed:
            try:
                epoll.poll()
            except (OSError, ValueError):
                return
            with self._lock:
                try:
                    while not self._closed and connection.poll(0):
                        self.read_one()
                except EOFError:
                    return
                except (OSError, ValueError):
                    self._eof()
                    return
                if self._closed:
                    return
                try:
                    epoll.modify(self._fd, select.EPOLLIN | select.EPOLLONESHOT)
                except (OSError, ValueError):
                    return

    def close(self) -> None:
        """Stop the watcher (call before closing the channel: it wakes on the shut socket)."""
        self._closed = True
        self.channel.shutdown()
        try:
            self._epoll.modify(self._fd, select.EPOLLIN)
        except (OSError, ValueError):
            pass
        if threading.current_thread() is not self._watcher:
            self._watcher.join(2)
        try:
            self._epoll.close()
        except OSError:
            pass
