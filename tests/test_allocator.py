"""experiments.runtime.allocator: with hardware.keep_freed_mib set, tensors freed together at the
end of a step come back at the next one without page faults; unset, glibc hands them back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.runtime.allocator import _glibc, keep_freed_memory

# Six 4 MiB buffers made, written and freed together, 20 times over (a training step's
# activations): glibc's defaults trim them off the heap each time; kept, they are reused.
STEPS = """
import json, resource, sys
from experiments.runtime.allocator import keep_freed_memory
kept = keep_freed_memory(None if sys.argv[1] == "none" else int(sys.argv[1]))
for _ in range(3):  # glibc's dynamic thresholds settle on the first frees
    bufs = [bytearray(4 << 20) for _ in range(6)]
    del bufs
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    bufs = [bytearray(4 << 20) for _ in range(6)]
    del bufs
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"kept": kept, "faults": after - before}))
"""


def _steps(setting: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, setting], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")
def test_freed_tensors_come_back_without_page_faults_when_kept():
    default, kept = _steps("none"), _steps("512")
    assert default["kept"] is False and kept["kept"] is True
    # 20 steps x 24 MiB = 122,880 pages if every page came back fresh.
    assert default["faults"] > 20_000, default
    assert kept["faults"] < default["faults"] / 10, (kept, default)


def test_none_leaves_malloc_as_it_is():
    assert keep_freed_memory(None) is False
