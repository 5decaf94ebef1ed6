"""Device choice and out-of-memory backoff."""

import pytest
import torch

from pipeline import device


def test_auto_and_cpu_resolve_on_a_machine_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.resolve_device("auto").type == expected
    assert device.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", 3])
def test_malformed_device_names_fail_clearly(name):
    with pytest.raises(ValueError, match="device: expected auto, cpu, cuda or cuda:N"):
        device.resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_fails_clearly():
    with pytest.raises(ValueError, match="CUDA is not available"):
        device.resolve_device("cuda:0")


def test_backoff_halves_the_batch_on_out_of_memory_and_covers_every_item(caplog):
    seen: list[range] = []

    def step(batch: slice) -> None:
        if batch.stop - batch.start > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        seen.append(range(batch.start, batch.stop))

    final = device.run_with_backoff(step, n=10, batch_size=8)
    assert final == 2
    assert [i for r in seen for i in r] == list(range(10))
    assert "retrying with batch size 4" in caplog.text


def test_backoff_reraises_other_errors():
    def step(batch: slice) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        device.run_with_backoff(step, n=4, batch_size=4)


def test_batch_slices_cover_the_range():
    assert [(s.start, s.stop) for s in device.batch_slices(7, 3)] == [(0, 3), (3, 6), (6, 7)]
