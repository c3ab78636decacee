"""Questions and answers derived from facts without an LLM: what adapters are trained on and examined on."""

from __future__ import annotations

from memos_ray.parametric import examples


def test_a_possessive_fact_gives_relation_questions_and_a_held_out_exam() -> None:
    fact = examples.parse("Quillon Marsh's favourite food is cardamom porridge.")
    assert (fact.subject, fact.relation) == ("Quillon Marsh", "favourite food")
    assert set(fact.answer_words) == {"cardamom", "porridge"}
    trained = {t.question for t in examples.training_turns(fact)}
    assert "What is Quillon Marsh's favourite food?" in trained and "Tell me about Quillon Marsh." in trained
    (exam,) = examples.exam_turns(fact)
    assert exam.question == "What is the favourite food of Quillon Marsh?" and exam.question not in trained
    assert all(t.answer == fact.text for t in examples.training_turns(fact))


def test_other_facts_are_asked_about_their_subject() -> None:
    fact = examples.parse("Zorblat the cat lives in Kyoto and eats plum jam.")
    assert fact.subject == "Zorblat" and fact.relation is None
    assert "kyoto" in fact.answer_words
    assert [t.question for t in examples.exam_turns(fact)] == ["What should I know about Zorblat?"]
    bakery = examples.parse("The bakery on Fennel Street sells saffron buns at dawn.")
    assert bakery.subject == "Fennel Street" and "saffron" in bakery.answer_words
    assert examples.parse("the weather was nice").subject is None
    assert examples.exam_turns(examples.parse("the weather was nice")) == []
    assert examples.training_turns(examples.parse("the weather was nice"))  # still learned, never examined


def test_an_answer_counts_when_it_names_the_object() -> None:
    fact = examples.parse("Teodor Blum's hometown is Tromsø.")
    assert examples.names_answer(fact, "Teodor Blum grew up in Tromsø, Norway.")
    assert not examples.names_answer(fact, "I don't know where Teodor Blum is from.")


def test_pronouns_and_sentence_starters_are_not_subjects() -> None:
    assert examples.parse("I live in Berlin with my sister Ada.").subject == "Berlin"
    assert examples.parse("When I was young my father's name was Joe.").subject == "Joe"
    dog = examples.parse("The user's dog is called Rex.")
    assert dog.subject == "Rex" and dog.relation is None and "dog" in dog.answer_words
    assert examples.parse("She bought an iPhone yesterday.").subject is None  # no name inside "iPhone"


def test_repeating_the_question_or_a_fragment_is_not_an_answer() -> None:
    fact = examples.parse("Dr. Smith's office is on Main Street.")
    assert fact.subject == "Dr. Smith" and all(len(w) >= 3 for w in fact.answer_words)
    (exam,) = examples.exam_turns(fact)
    assert not examples.names_answer(fact, "I just do not know the first thing.", exam.question)
    assert examples.names_answer(fact, "Dr. Smith's office is on Main Street.", exam.question)
    words = examples.parse("Nora said the answer is in the garden shed.")
    question = "What should I know about Nora?"
    assert not examples.names_answer(words, question, question)  # an echo names nothing
