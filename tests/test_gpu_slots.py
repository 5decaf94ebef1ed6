"""The GPU slot allocator: concurrent processes get distinct GPUs, and a killed job frees its slot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import gpu_slots

# A job that claims a slot, reports it, and holds it until its stdin closes.
HOLDER = """
import os, sys
from pipeline.gpu_slots import claim_gpu_slot
slot = claim_gpu_slot(num_slots=int(sys.argv[1]), lock_dir=sys.argv[2], poll_s=0.02, timeout_s=float(sys.argv[3]))
print(slot, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
sys.stdin.read()
"""


def start_holder(num_slots: int, lock_dir, timeout_s: float = 30.0) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", gpu_slots.SLOTS_ENV)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(num_slots), str(lock_dir), str(timeout_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def claimed_slot(holder: subprocess.Popen) -> int:
    line = holder.stdout.readline().split()
    assert line, holder.stderr.read()
    slot, visible = line
    assert visible == slot
    return int(slot)


def release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(timeout=30)


def test_concurrent_claims_get_distinct_slots_and_a_killed_job_frees_its_slot(tmp_path):
    num_slots = 3
    holders = [start_holder(num_slots, tmp_path) for _ in range(num_slots)]
    try:
        slots = [claimed_slot(h) for h in holders]
        assert sorted(slots) == list(range(num_slots))

        overflow = start_holder(num_slots, tmp_path, timeout_s=0.5)
        overflow.stdin.close()
        assert overflow.wait(timeout=30) != 0
        assert "all 3 GPU slots stayed taken" in overflow.stderr.read()

        waiter = start_holder(num_slots, tmp_path)
        time.sleep(0.3)
        assert waiter.poll() is None, "a claim must wait while every slot is taken"
        victim = holders.pop(1)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert claimed_slot(waiter) == slots[1]
        holders.append(waiter)
    finally:
        for holder in holders:
            release(holder)


def test_claims_after_release_reuse_the_lowest_free_slot(tmp_path):
    first = start_holder(2, tmp_path)
    assert claimed_slot(first) == 0
    release(first)
    second = start_holder(2, tmp_path)
    try:
        assert claimed_slot(second) == 0
    finally:
        release(second)


def test_preset_visible_devices_are_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert gpu_slots.claim_gpu_slot(num_slots=4, lock_dir=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert list(tmp_path.iterdir()) == []


def test_no_gpus_means_no_claim(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "0")
    assert gpu_slots.claim_gpu_slot(lock_dir=tmp_path) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slot_count_override(monkeypatch):
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "4")
    assert gpu_slots.count_gpus() == 4
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "two")
    with pytest.raises(ValueError, match=gpu_slots.SLOTS_ENV):
        gpu_slots.count_gpus()
