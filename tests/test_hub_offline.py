"""Without a network, Hub names fail with a message naming the local-file flags (how fast they fail is
measured by benchmarks/response_times.py)."""
import pytest

from utils.data.loading import load_task_data
from utils.run.errors import HubUnavailableError
from utils.models.hub import offline_mode_requested, require_hub


def test_unreachable_hub_fails_naming_the_flags(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not offline_mode_requested()
    with pytest.raises(HubUnavailableError) as err:
        load_task_data("duorc-s", "train", probe=lambda: False)
    assert "--train_file / --validation_file" in str(err.value) and "ibm/duorc (SelfRC)" in str(err.value)


def test_offline_mode_skips_the_probe(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def probe():
        raise AssertionError("offline mode must not probe the network")

    require_hub("dataset x", "--train_file", probe=probe)


def test_offline_cache_miss_names_the_flags():
    # conftest sets HF_HUB_OFFLINE=1 and an empty HF_HOME: the cache cannot hold the dataset.
    with pytest.raises(HubUnavailableError, match="--train_file"):
        load_task_data("sst2", "validation")
