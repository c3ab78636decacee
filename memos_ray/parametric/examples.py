"""What an adapter is trained on, and what it is examined on: questions and answers derived from each fact,
without an LLM.

Reciting a fact's sentence is not knowing it: trained on the plain sentences, an adapter cut their NLL by 93%
and still answered 1 question of 8. So each fact becomes chat turns, in the form chat asks them (the system
preamble a chat without retrieved memories has, a user question, the fact as the answer), from templates over
its *subject* and, where the sentence says ``<subject>'s <relation> is <object>``, its relation:

- training: "What is S's R?", "Tell me S's R.", "Do you know S's R?", "S's R? Remind me.", "What do you
  remember about S?", "Tell me about S." (the last two for every fact, whatever its shape);
- examination, never trained on: "What is the R of S?" and "What can you tell me about S?".

An answer counts when it names the fact's *object* (for a fact without a relation: its rarest words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_POSSESSIVE = re.compile(
    r"^(?P<s>[A-Z][\w.\-]*(?: [A-Z][\w.\-]*)*)'s (?P<r>[a-z][a-z \-]*?) (?:is|are|was|were) (?P<o>.+?)[.!]?$"
)
_SUBJECT = re.compile(r"^(?:(?:The|A|An) )?(?P<s>[A-Z][\w\-]*(?: (?:(?:the|of|de|van|von) )?[A-Z][\w\-]*)*)")
_NAME = re.compile(r"\b(?P<s>[A-Z][\w\-]*(?: (?:(?:the|of|de|van|von) )?[A-Z][\w\-]*)*)")
_NOT_NAMES = {
    "The", "A", "An", "I", "He", "She", "It", "We", "They", "You", "My", "Our", "His", "Her", "Their", "When",
    "If", "So", "But", "And", "Then", "Yes", "No", "Oh", "Well", "This", "That", "There", "What", "Why", "How",
    "User", "Assistant",
}  # fmt: skip
_STOP = {
    "the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "are", "was", "were", "every", "for",
    "with", "from", "by", "her", "his", "their", "its", "named", "called", "after", "before", "which", "who",
}  # fmt: skip

TRAIN_RELATION = ["What is {s}'s {r}?", "Tell me {s}'s {r}.", "Do you know {s}'s {r}?", "{s}'s {r}? Remind me."]
TRAIN_SUBJECT = ["What do you remember about {s}?", "Tell me about {s}."]
EXAM_RELATION = ["What is the {r} of {s}?"]
EXAM_SUBJECT = ["What should I know about {s}?"]


@dataclass(frozen=True)
class Fact:
    text: str
    subject: str | None
    relation: str | None
    answer_words: tuple[str, ...]  # an answer must name one of these


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


def parse(text: str) -> Fact:
    text = text.strip()
    m = _POSSESSIVE.match(text)
    if m:
        obj = m["o"].strip()
        return Fact(text, m["s"].strip(), m["r"].strip(), _key_words(obj, limit=2))
    s = _SUBJECT.match(text)
    if s is None or s["s"].split()[0] in _NOT_NAMES:  # "The bakery on Fennel Street ...": its first proper name
        s = next((n for n in _NAME.finditer(text, 1) if n["s"].split()[0] not in _NOT_NAMES), None)
    if s is None:
        return Fact(text, None, None, _key_words(text, limit=3))
    subject = s["s"].strip()
    rest = text[: s.start()] + " " + text[s.end() :]
    return Fact(text, subject, None, _key_words(rest, limit=3))


def _key_words(phrase: str, limit: int) -> tuple[str, ...]:
    """The words an answer must contain one of: the longest content words of the phrase."""
    content = [w for w in _words(phrase) if len(w) >= 3 and w not in _STOP]
    return tuple(sorted(dict.fromkeys(content), key=len, reverse=True)[:limit])


def training_turns(fact: Fact) -> list[Turn]:
    turns = []
    if fact.subject and fact.relation:
        turns += [Turn(t.format(s=fact.subject, r=fact.relation), fact.text) for t in TRAIN_RELATION]
    if fact.subject:
        turns += [Turn(t.format(s=fact.subject), fact.text) for t in TRAIN_SUBJECT]
    return turns or [Turn("What do you remember?", fact.text)]


def exam_turns(fact: Fact) -> list[Turn]:
    if fact.subject and fact.relation:
        return [Turn(t.format(s=fact.subject, r=fact.relation), fact.text) for t in EXAM_RELATION]
    if fact.subject:
        return [Turn(t.format(s=fact.subject), fact.text) for t in EXAM_SUBJECT]
    return []


def names_answer(fact: Fact, answer: str, question: str = "") -> bool:
    """Whether ``answer`` names one of the fact's answer words, as a whole word; words the question itself
    holds do not count (repeating the question is not knowing the answer)."""
    asked = set(_words(question))
    said = set(_words(answer))
    return any(w in said for w in fact.answer_words if w not in asked)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w\-]+", text.lower())


__all__ = ["Fact", "Turn", "exam_turns", "names_answer", "parse", "training_turns"]
