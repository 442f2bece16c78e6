"""The candidates' seccomp program, run through a small classic-BPF interpreter (pure logic).

The filter's effect on real processes is tested in test_hostile.py; here every decision is
checked on synthetic `struct seccomp_data` for both architectures, including the ABI checks
that a test process cannot reach (i386 int 0x80, x32).
"""
import struct

import pytest

from evoforge.sandbox import _linux as L

ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | 1, 0x00050000 | 38
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
CLONE = {"x86_64": 56, "aarch64": 220}
READ = {"x86_64": 0, "aarch64": 63}
UNSHARE = {"x86_64": 272, "aarch64": 97}


def run_bpf(program: bytes, nr: int, arch: int, args=(0,) * 6) -> int:
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x35, 0x45):  # jeq / jge / jset
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:  # ret k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_decisions(machine):
    prog = L.seccomp_program(machine)
    arch = ARCH[machine]
    assert len(prog) % 8 == 0 and len(prog) // 8 < 256
    assert run_bpf(prog, READ[machine], arch) == ALLOW
    assert run_bpf(prog, UNSHARE[machine], arch) == EPERM
    for name, nr in L._SYSCALLS[machine][3].items():
        assert run_bpf(prog, nr, arch) == EPERM, name
    assert run_bpf(prog, 435, arch) == ENOSYS  # clone3: libc falls back to clone
    clone = CLONE[machine]
    assert run_bpf(prog, clone, arch, (0x11,) + (0,) * 5) == ALLOW  # fork()
    assert run_bpf(prog, clone, arch, (0x3D0F00,) + (0,) * 5) == ALLOW  # pthread_create
    for flag in (0x10000000, 0x20000000, 0x40000000, 0x08000000, 0x04000000, 0x00020000,
                 0x02000000):
        assert run_bpf(prog, clone, arch, (flag | 0x11,) + (0,) * 5) == EPERM, hex(flag)
    assert run_bpf(prog, READ[machine], 0x40000003) == KILL  # i386 ABI: numbers differ


def test_x32_abi_is_killed_and_unknown_machines_get_no_program():
    prog = L.seccomp_program("x86_64")
    assert run_bpf(prog, 0x40000000 | 0, ARCH["x86_64"]) == KILL
    assert L.seccomp_program("riscv64") is None
    assert set(L._SYSCALLS["x86_64"][3]) == set(L._SYSCALLS["aarch64"][3])
