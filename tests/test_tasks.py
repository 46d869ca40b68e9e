import pytest

from utils.run.errors import UnknownTaskError
from utils.data.registry import TASKS, get_task, list_tasks, parse_task_list

# DESIGN.md section 5, written out independently of the registry.
EXPECTED_NAMES = {
    "squad": "squad", "squad_v1": "squad",
    "squad_v2": "squad_v2",
    "duorc-p": "duorc-p", "duorc_p": "duorc-p", "duorc;ParaphraseRC": "duorc-p",
    "duorc-s": "duorc-s", "duorc_s": "duorc-s", "duorc;SelfRC": "duorc-s",
    "drop": "drop", "quoref": "quoref",
    "mlqa_en": "mlqa_en", "mlqa_de": "mlqa_de", "mlqa_es": "mlqa_es",
    "sst2": "sst2", "glue": "sst2", "glue;sst2": "sst2",
    # The GLUE targets (issue 13), in the same style.
    "cola": "cola", "glue;cola": "cola",
    "mrpc": "mrpc", "glue;mrpc": "mrpc",
    "stsb": "stsb", "sts-b": "stsb", "glue;stsb": "stsb",
    "qqp": "qqp", "glue;qqp": "qqp",
    "mnli": "mnli", "mnli-m": "mnli", "mnli_matched": "mnli", "glue;mnli": "mnli",
    "mnli-mm": "mnli-mm", "mnli_mismatched": "mnli-mm", "glue;mnli_mismatched": "mnli-mm",
    "qnli": "qnli", "glue;qnli": "qnli",
    "rte": "rte", "glue;rte": "rte", "glue-rte": "rte",
    "wnli": "wnli", "glue;wnli": "wnli",
}
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli"]


@pytest.mark.parametrize("name,canonical", sorted(EXPECTED_NAMES.items()))
def test_every_design_name_and_alias_resolves(name, canonical):
    assert get_task(name).name == canonical
    assert get_task(name.upper()).name == canonical


def test_registry_lists_exactly_the_design_tasks():
    assert sorted(list_tasks()) == sorted(set(EXPECTED_NAMES.values()))
    assert list_tasks("classification") == GLUE_TASKS


@pytest.mark.parametrize("name,kind,v2", [
    ("squad", "qa", False), ("squad_v2", "qa", True), ("duorc-p", "qa", True), ("duorc-s", "qa", True),
    ("drop", "qa", False), ("quoref", "qa", False), ("mlqa_en", "qa", False), ("sst2", "classification", False),
])
def test_kind_and_unanswerable_mode(name, kind, v2):
    spec = get_task(name)
    assert (spec.kind, spec.version_2_with_negative) == (kind, v2)


def test_hub_sources():
    assert (get_task("duorc;SelfRC").hub_id, get_task("duorc;SelfRC").hub_config) == ("ibm/duorc", "SelfRC")
    assert get_task("duorc-p").hub_config == "ParaphraseRC"
    assert get_task("sst2").hub_id == "nyu-mll/glue" and get_task("sst2").hub_config == "sst2"
    assert get_task("sst2").label_names == ("negative", "positive")
    # MLQA has no train split: training reads its test split.
    assert get_task("mlqa_de").hub_split("train") == "test"
    assert get_task("mlqa_de").hub_split("validation") == "validation"
    assert get_task("squad").hub_split("train") == "train"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownTaskError) as err:
        get_task("squad3")
    message = str(err.value)
    assert "squad3" in message
    for name in list_tasks():
        assert name in message


def test_original_task_list_spelling():
    specs = parse_task_list("squad,squad_v2,duorc;SelfRC")
    assert [s.name for s in specs] == ["squad", "squad_v2", "duorc-s"]
    with pytest.raises(UnknownTaskError, match="twice"):
        parse_task_list("squad,squad_v1")
    with pytest.raises(UnknownTaskError, match="Known tasks"):
        parse_task_list("squad,nope")


def test_tasks_built_from_the_same_data_are_named():
    from utils.data.registry import shared_data_warnings

    squad, squad_v2, duorc_p, duorc_s, drop = (get_task(n) for n in ("squad", "squad_v2", "duorc-p", "duorc-s", "drop"))
    messages = shared_data_warnings([squad_v2, drop], [squad, duorc_s])
    assert len(messages) == 1 and "squad shares data with training task squad_v2" in messages[0]
    assert "not a held-out task" in messages[0]
    assert len(shared_data_warnings([duorc_p], [duorc_s])) == 1
    assert shared_data_warnings([drop], [squad]) == []


def test_every_name_and_alias_is_registered_once():
    keys = [key.lower() for spec in TASKS for key in (spec.name, *spec.aliases)]
    assert len(keys) == len(set(keys))
