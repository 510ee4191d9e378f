"""Who may do what through the control socket: administrators, and watchers.

Theory of operation
-------------------
Reaching the control socket has always meant administering the daemon: the socket is
0660 and belongs to ``[control] control_group`` (``lanchat``), so root, the daemon's
own user and that group's members can connect, and nobody else.

``[control] control_watch_group`` adds a second role for a group that may *watch*
(``status``, ``rooms``, ``users``, ``log``) but not act: a help desk, a teacher's
assistant, a monitoring check.  A file has one group, so the watchers' group is given
the socket by a POSIX ACL (``group:WATCH:rw``, and ``--x`` on the socket's directory
when others may not enter it, as ``/run/lanchatd`` at 0750), set by the daemon on files
it owns.  Then each connection's role comes from its peer's credentials, taken by the
kernel at ``connect()``: ``SO_PEERCRED`` for the user and ``SO_PEERGROUPS`` for every
group the peer process is in.  Root, the daemon's own user and members of the control
group administer; anyone else who got in watches (least privilege: the watchers'
group, or a mode someone widened by hand).  Without a watch group, every connection
administers, as before.

Only a system daemon (root or a system user) hands its socket to groups; an ordinary
user's daemon keeps it to that user (lanchatd.control does the same for the group).
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import struct
from collections.abc import Callable

SYSTEM_UID_MAX = 999

_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13; not in every Python
_MAX_GROUPS = 65536
# POSIX ACL extended attribute (linux/posix_acl_xattr.h): a version, then
# (tag, permissions, id) entries sorted by tag and id.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The supplementary groups of the process at the other end of ``sock``."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * _MAX_GROUPS)
    except OSError:
        return frozenset()
    return frozenset(struct.unpack(f"={len(data) // 4}I", data[:len(data) // 4 * 4]))


def role(creds: tuple[int, int, int] | None, groups: frozenset[int], control_group: str,
         watch_group: str, own_uid: int | None = None) -> str:
    """ADMIN or WATCH for a peer with ``creds`` (pid, uid, gid) in ``groups``."""
    # The commands' module, loaded with the first control connection (lanchatd/control.py).
    from lanchatd.admin import ADMIN, WATCH

    if not watch_group:
        return ADMIN
    if creds is None:
        return WATCH
    _pid, uid, gid = creds
    if uid in (0, os.geteuid() if own_uid is None else own_uid):
        return ADMIN
    control_gid = group_id(control_group) if control_group else None
    if control_gid is not None and control_gid in (groups | {gid}):
        return ADMIN
    return WATCH


def _acl(owner: int, group: int, other: int, named: dict[int, int]) -> bytes:
    mask = group
    for perms in named.values():
        mask |= perms
    entries = [(_USER_OBJ, owner, _UNDEFINED_ID), (_GROUP_OBJ, group, _UNDEFINED_ID),
               *((_GROUP, perms, gid) for gid, perms in sorted(named.items())),
               (_MASK, mask, _UNDEFINED_ID), (_OTHER, other, _UNDEFINED_ID)]
    return struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perms, ident) for tag, perms, ident in entries)


def _add_group(path: str, gid: int, perms: int) -> None:
    """Give ``gid`` ``perms`` (rwx bits) on ``path`` by an ACL, keeping the mode's bits."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    os.setxattr(path, _ACL_XATTR, _acl((mode >> 6) & 7, (mode >> 3) & 7, mode & 7,
                                       {gid: perms}))


def grant_watchers(path: str, watch_group: str, say: Callable[[str], None]) -> None:
    """Let ``watch_group`` reach the control socket at ``path`` (see the module doc)."""
    if not watch_group:
        return
    uid = os.geteuid()
    if uid > SYSTEM_UID_MAX:
        say(f"[control] control_watch_group {watch_group!r} is for a system daemon (root "
            "or a system user); this one keeps its control socket to its own user")
        return
    gid = group_id(watch_group)
    if gid is None:
        say(f"the group {watch_group!r} ([control] control_watch_group) does not exist, "
            f"so nobody watches through {path}; create it (groupadd --system "
            f"{watch_group})")
        return
    directory = os.path.dirname(path) or "."
    try:
        _add_group(path, gid, 6)
        st = os.stat(directory)
        if not st.st_mode & stat.S_IXOTH and st.st_uid == uid:
            _add_group(directory, gid, 1)
    except OSError as exc:
        say(f"cannot let group {watch_group!r} watch through {path} "
            f"({exc.strerror or exc}: the file system needs POSIX ACLs)")
