"""Hub names without a network fail in one line naming the local-file flag, never by hanging. Nothing
here touches the network: conftest turns huggingface_hub's offline mode on with an empty cache, and
the online case replaces the download by one that fails as a download without a network does."""
import datasets
import pytest
from huggingface_hub import constants as hub_constants
from transformers import PretrainedConfig

from utils.data.loading import load_task_data
from utils.models.loading import load_model
from utils.run.errors import HubUnavailableError


def test_offline_cache_miss_names_the_flags():
    assert hub_constants.HF_HUB_OFFLINE          # conftest's offline mode, as huggingface_hub reads it
    with pytest.raises(HubUnavailableError) as err:
        load_task_data("sst2", "validation")
    message = str(err.value)
    assert "--train_file / --validation_file" in message and "offline mode is on" in message
    assert "\n" not in message and "nyu-mll/glue (sst2)" in message


def test_failed_download_names_the_flags(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'ibm/duorc' on the Hub (ConnectTimeout)\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(HubUnavailableError) as err:
        load_task_data("duorc-s", "train", local_hint="--file PATH")
    message = str(err.value)
    assert message.startswith("dataset ibm/duorc (SelfRC) could not be loaded from the Hugging Face Hub")
    assert "--file PATH" in message and "ConnectionError: Couldn't reach" in message and "\n" not in message


def test_hub_model_without_network_names_the_flag(monkeypatch):
    with pytest.raises(HubUnavailableError, match="offline mode is on.*--model_name"):
        load_model("gpt2", "lm")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(PretrainedConfig, "get_config_dict", unreachable)
    with pytest.raises(HubUnavailableError, match="could not be loaded from the Hugging Face Hub.*--model_name"):
        load_model("openai-community/gpt2", "lm")
