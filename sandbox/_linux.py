"""Thin ctypes wrappers over the Linux calls Python 3.11 lacks: unshare, setns, mount,
pivot_root, prctl, and the candidates' seccomp filter.

Trusted code only (the fork-server, its supervisors and the subprocess runner's pre-exec hook).
Every wrapper raises OSError with errno on failure.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace behind `fd` (for CLONE_NEWPID: the one our next children get)."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(38, f"pivot_root: unsupported architecture {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(option, arg2, 0, 0, 0), f"prctl {option}")


def bind_ro(source: str, target: str) -> None:
    """Read-only, nosuid, nodev bind mount (the remount is needed for the flags to apply)."""
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


# ------------------------------------------------------------------------------ seccomp
#
# Defence in depth for candidate processes (loaded after their privileged set-up, inherited by
# everything they start, never removable): the kernel interfaces a contained, unprivileged
# program has no use for and that widen the kernel's attack surface. User, mount and other
# namespaces (unshare, setns, clone with CLONE_NEW*; clone3 answers ENOSYS so libc falls back to
# clone, whose flags a filter can read), the mount API, keyrings, bpf, userfaultfd,
# perf_event_open, io_uring, ptrace and cross-process memory access, kernel modules and kexec,
# open_by_handle_at. Denied calls fail with EPERM; a syscall of another ABI (i386 int 0x80,
# x32) kills the process, since the numbers below would not apply to it.

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_EPERM, _ENOSYS = 1, 38
_X32_BIT = 0x40000000
_AUDIT_ARCH_X86_64, _AUDIT_ARCH_AARCH64 = 0xC000003E, 0xC00000B7
CLONE_NEWCGROUP = 0x02000000
_CLONE_NS_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
                   | CLONE_NEWPID | CLONE_NEWNET)

# machine: (AUDIT_ARCH, clone, clone3, {denied syscall: number})
_SYSCALLS = {
    "x86_64": (_AUDIT_ARCH_X86_64, 56, 435, {
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "userfaultfd": 323, "perf_event_open": 298,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
        "open_by_handle_at": 304}),
    "aarch64": (_AUDIT_ARCH_AARCH64, 220, 435, {
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "userfaultfd": 282, "perf_event_open": 241,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "open_by_handle_at": 265}),
}
# classic BPF opcodes
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06


@functools.lru_cache(maxsize=None)
def seccomp_program(machine: str | None = None) -> bytes | None:
    """The filter as raw `struct sock_filter` records (what `seccomp_export_bpf` writes and
    `bwrap --seccomp FD` reads), or None on an architecture without a table here. Built once
    per process and machine (the subprocess runner asks for it on every run)."""
    table = _SYSCALLS.get(machine or platform.machine())
    if table is None:
        return None
    arch, clone, clone3, denied = table
    # (code, k, jump-if-true label, jump-if-false label); labels name the return blocks,
    # None = the next instruction.
    insns: list[tuple[int, int, str | None, str | None]] = [
        (_LD_W_ABS, 4, None, None),                       # seccomp_data.arch
        (_JEQ_K, arch, None, "kill"),
        (_LD_W_ABS, 0, None, None),                       # seccomp_data.nr
    ]
    if arch == _AUDIT_ARCH_X86_64:  # x32-ABI numbers have this bit set
        insns.append((_JGE_K, _X32_BIT, "kill", None))
    insns += [(_JEQ_K, nr, "eperm", None) for nr in sorted(set(denied.values()))]
    insns += [(_JEQ_K, clone3, "enosys", None),
              (_JEQ_K, clone, None, "allow"),
              (_LD_W_ABS, 16, None, None),                # low 32 bits of args[0]: the flags
              (_JSET_K, _CLONE_NS_FLAGS, "eperm", "allow")]
    rets = {"allow": _RET_ALLOW, "kill": _RET_KILL_PROCESS, "eperm": _RET_ERRNO | _EPERM,
            "enosys": _RET_ERRNO | _ENOSYS}
    at = {label: len(insns) + i for i, label in enumerate(rets)}
    out = bytearray()
    for i, (code, k, jt, jf) in enumerate(insns):
        offs = [0 if lab is None else at[lab] - i - 1 for lab in (jt, jf)]
        if not all(0 <= o <= 255 for o in offs):
            raise ValueError("seccomp program: jump out of range")
        out += struct.pack("=HBBI", code, offs[0], offs[1], k)
    for value in rets.values():
        out += struct.pack("=HBBI", _RET_K, 0, 0, value)
    return bytes(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load(program: bytes) -> None:
    """Install `program` for this thread and its future children (needs no_new_privs or
    CAP_SYS_ADMIN)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0),
           "prctl(PR_SET_SECCOMP)")
