"""A burst of password checks leaves no memory behind: each argon2 hash's 19 MiB goes back to
the system when it ends (cnop.services.user.passwords.return_hash_memory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Run in a process of its own: the allocator's state is per process, and the test suite's own
# process has been through everything else first.
BURST = textwrap.dedent(
    """
    import threading, psutil
    from cnop.services.user.passwords import Passwords
    passwords = Passwords(time_cost=2, memory_cost_kib=19456, parallelism=1, max_concurrent=4)
    process = psutil.Process()
    before = process.memory_info().rss
    def work():
        for _ in range(3):
            passwords._hasher.hash("Str0ng!Passw0rd")
    for _ in range(2):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
    print((process.memory_info().rss - before) >> 20)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator is the one that keeps it")
def test_four_hashing_threads_leave_no_memory_behind() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BURST], capture_output=True, text=True, timeout=120, check=True
    )
    grown_mib = int(done.stdout.strip())
    # Without return_hash_memory: 4 threads x 19 MiB (~76 MiB) kept for good.
    assert grown_mib < 20, f"{grown_mib} MiB kept after the burst"
