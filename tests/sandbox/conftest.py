import os

import pytest

from evoforge.sandbox._common import UID_BASE, UID_COUNT


def sandbox_processes() -> list[tuple[int, int]]:
    """(pid, uid) of every live process running under a sandbox uid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        if UID_BASE <= uid < UID_BASE + UID_COUNT:
                            found.append((int(name), uid))
                        break
        except OSError:
            continue
    return found


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandboxes need root")


@pytest.fixture(scope="session")
def fork_sandbox():
    if os.geteuid() != 0:
        pytest.skip("the fork-server sandbox needs root")
    from evoforge.sandbox.forkserver import ForkServerSandbox

    sb = ForkServerSandbox().start()
    yield sb
    sb.close()


NORMAL = "import numpy as np\n\ndef f(n):\n    return float(np.sum(np.arange(n)))\n"


def assert_still_works(sb) -> None:
    r = sb.run(NORMAL, "f", [{"n": 10}], timeout_s=10)
    assert r.status == "ok", r
    assert r.outputs == [45.0]
