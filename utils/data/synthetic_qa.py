"""Synthetic extractive QA: small tasks a tiny model can learn in seconds, with known answers.

A context is one event sentence with typed slots ("Dora visited Hanoi in 1987 with a goat.")
among entity-free filler sentences, in random order; the question asks for one slot ("Which city
did Dora visit?"), and the answer is the slot's value. Answering means reading the context:
finding the token of the asked type wherever the sentence landed. A *family* of tasks shares that
structure and differs in templates, questions and vocabularies, which is what meta-learning
experiments need.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from utils.data.records import make_qa_record

PEOPLE = ("Anna", "Ben", "Carl", "Dora", "Emil", "Fay", "Gus", "Hana", "Ivan", "Jude", "Kurt", "Lena")
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Dakar", "Hanoi", "Kyiv", "Perth")
YEARS = tuple(str(year) for year in range(1950, 2010, 5))
ANIMALS = ("goat", "horse", "parrot", "tiger", "camel", "otter", "raven", "moose", "llama", "zebra")
FILLERS = ("It was a long journey.", "Nobody expected the weather to hold.", "The trip made the news.",
           "Many friends came to say goodbye.", "The roads were quiet that week.", "Everyone still talks about it.")


@dataclass(frozen=True)
class SyntheticTask:
    """One member of the family.

    Attributes:
        template: the event sentence; its {slots} name the entries of `vocabularies`.
        questions: slot -> question (may use the other slots, e.g. "Which city did {person} visit?").
    """

    name: str
    template: str = "{person} visited {city} in {year} with a {animal}."
    questions: dict[str, str] = field(default_factory=lambda: {
        "person": "Who visited {city}?", "city": "Which city did {person} visit?",
        "year": "When did {person} visit {city}?", "animal": "Which animal came with {person}?"})
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "person": PEOPLE, "city": CITIES, "year": YEARS, "animal": ANIMALS})
    fillers: tuple[str, ...] = FILLERS


def synthetic_records(task: SyntheticTask, num_examples: int, *, seed: int, max_fillers: int = 3) -> list[dict]:
    """`num_examples` canonical QA records of `task`, the same for the same seed."""
    rng = np.random.default_rng(seed)
    slots = list(task.questions)
    records = []
    for index in range(num_examples):
        values = {slot: vocabulary[int(rng.integers(len(vocabulary)))] for slot, vocabulary in task.vocabularies.items()}
        event = task.template.format(**values)
        sentences = [task.fillers[int(i)] for i in rng.choice(len(task.fillers), int(rng.integers(max_fillers + 1)),
                                                              replace=False)]
        sentences.insert(int(rng.integers(len(sentences) + 1)), event)
        context = " ".join(sentences)
        asked = slots[int(rng.integers(len(slots)))]
        answer = values[asked]
        event_start = context.index(event)
        slot_offset = task.template.index("{" + asked + "}")
        prefix = task.template[:slot_offset].format(**values)
        start = event_start + len(prefix)
        records.append(make_qa_record(record_id=f"{task.name}-{seed}-{index}", task=task.name, context=context,
                                      question=task.questions[asked].format(**values), texts=[answer],
                                      starts=[start]))
    return records


def meta_learning_family() -> dict[str, SyntheticTask]:
    """Five members of one family (the same structure, other events and wordings), keyed by the
    registry names the meta-learning tests and benchmarks borrow for them; the last one is the
    one held out."""
    def event(name: str, template: str, verb: str, past: str, animal_question: str) -> SyntheticTask:
        return SyntheticTask(name, template=template, questions={
            "person": f"Who {past} to {{city}}?", "city": f"Where did {{person}} {verb}?",
            "year": f"When did {{person}} {verb} to {{city}}?", "animal": animal_question})

    return {
        "squad": SyntheticTask("visit"),
        "squad_v2": event("move", "{person} moved to {city} in {year} with a {animal}.", "move", "moved",
                          "Which animal moved with {person}?"),
        "duorc-p": event("fly", "In {year}, {person} flew to {city} with a {animal}.", "fly", "flew",
                         "Which animal flew with {person}?"),
        "drop": event("ride", "A {animal} carried {person} to {city} in {year}.", "ride", "rode",
                      "Which animal carried {person}?"),
        "quoref": event("sail", "{person} sailed to {city} with a {animal} in {year}.", "sail", "sailed",
                        "Which animal sailed with {person}?"),
    }
