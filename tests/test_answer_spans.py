from utils.data.records import locate_answer, repair_offset, span_matches

CONTEXT = "The Red Door opened. Mara walked through the red door at dawn."


def test_exact_match_takes_the_first_occurrence():
    found = locate_answer(CONTEXT, "Mara")
    assert (found.start, found.text, found.how, found.occurrences) == (21, "Mara", "exact", 1)


def test_case_insensitive_match_keeps_the_context_casing():
    found = locate_answer("He opened The Red Door.", "the red door")
    assert found.how == "case_insensitive"
    assert found.text == "The Red Door" and found.start == 10
    assert span_matches("He opened The Red Door.", found.text, found.start)


def test_exact_beats_case_insensitive_and_counts_occurrences():
    found = locate_answer(CONTEXT, "red door")
    assert (found.start, found.how, found.occurrences) == (CONTEXT.index("red door"), "exact", 1)


def test_trimmed_answer():
    found = locate_answer(CONTEXT, " at dawn.")
    assert found.how == "exact"  # " at dawn." itself occurs
    found = locate_answer("They left at dawn", "At dawn.")
    assert (found.text, found.how) == ("at dawn", "trimmed")


def test_free_form_answer_not_found():
    assert locate_answer(CONTEXT, "She went through a door.") is None
    assert locate_answer(CONTEXT, "") is None


def test_repair_offset_nearest_within_shift():
    context = "Anna met Bob. Later Anna left."
    assert repair_offset(context, "Anna", 1, max_shift=5) == 0
    assert repair_offset(context, "Anna", 18, max_shift=5) == 20
    assert repair_offset(context, "Anna", 10, max_shift=5) is None
    assert repair_offset(context, "Zoe", 0, max_shift=50) is None


def test_span_invariant():
    assert span_matches("abc", "b", 1)
    assert not span_matches("abc", "b", 0)
    assert not span_matches("abc", "", 0)
    assert not span_matches("abc", "a", -1)


def test_whole_word_occurrence_is_preferred():
    context = "They met in Chinatown, then flew to China."
    found = locate_answer(context, "China")
    assert found.start == context.index("China.") and not found.inside_word
    assert found.occurrences == 2
    only_inside = locate_answer("Lupo arrives.", "Lu")
    assert only_inside.start == 0 and only_inside.inside_word


def test_whole_word_in_another_case_beats_a_cut_word():
    found = locate_answer("The source of RC cola.", "rc")
    assert (found.text, found.inside_word, found.how) == ("RC", False, "case_insensitive")
