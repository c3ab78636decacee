"""Redaction on ingest: secrets and personal data are masked before anything is stored.

Detectors are regular expressions, some with a check that cuts false positives (Luhn for
card numbers, mod 97 for IBANs, a digit count for phone numbers). Where a secret follows a
label ("password: hunter2", "api_key=..."), only the value is masked, so the memory still
says what was there. The ingress runs the detectors on a memory's text, context and string
metadata, and records what was masked (detector names and counts, never the values) in the
audit log and in the memory's provenance.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from memos_ray.config import RedactionConfig
from memos_ray.types import MemoryCreate, MemoryItem, MemoryUpdate, MessagesCreate

M = TypeVar("M", MemoryCreate, MemoryUpdate, MemoryItem)  # an ingest, an edit, an imported version


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _iban(match: str) -> bool:
    s = re.sub(r"\s", "", match).upper()
    moved = s[4:] + s[:4]
    return 15 <= len(s) <= 34 and int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", match.strip()):  # an ISO date
        return False
    plain = not re.search(r"[+(.-]", match) and not match.startswith("0")
    return 9 <= len(digits) <= 15 and not plain  # "2019 2020 2021" is not a phone number


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: re.Pattern[str]
    group: int = 0  # the part masked: 0 the whole match, n a labelled value
    check: Callable[[str], bool] | None = None


_SECRET_VALUE = r"[\"']?([A-Za-z0-9_\-./+=~!@#$%^&*]{6,})[\"']?"

BUILTIN: dict[str, list[Detector]] = {
    "email": [Detector("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"))],
    "api_key": [
        Detector(
            "api_key",
            re.compile(
                r"\b(?:sk-(?:ant-)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}"
                r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|mrk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}"
                r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
            ),
        ),
        # to its END line, or to the end of the text when that line is missing (a key cut short is still a key)
        Detector(
            "api_key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
        ),
        Detector(
            "api_key",
            re.compile(
                r"(?i)\b(?:api[_ -]?key|secret(?:[_ -]?key)?|access[_ -]?key|auth[_ -]?token|token)\b"
                r"\s*(?:is|:|=)\s*[\"']?([A-Za-z0-9_\-./+=]{12,})[\"']?"
            ),
            group=1,
        ),
    ],
    "password": [
        Detector(
            "password",
            re.compile(r"(?i)\b(?:password|passwd|passphrase|pwd|passcode)\b\s*(?:is|was|:|=)\s*:?\s*" + _SECRET_VALUE),
            group=1,
        )
    ],
    "credit_card": [Detector("credit_card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), check=_card)],
    "iban": [Detector("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), check=_iban)],
    "phone": [
        Detector(
            "phone",
            re.compile(
                r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,8}){1,4}(?![\w-])"
                r"|\+\d{9,15}\b"
            ),
            check=_phone,
        )
    ],
}
# Order matters: card numbers and IBANs before phone numbers, which would match their digits too.
_ORDER = ["api_key", "password", "email", "credit_card", "iban", "phone"]


class Redactor:
    def __init__(self, config: RedactionConfig) -> None:
        self.config = config
        chosen = [d for name in _ORDER if name in config.detectors for d in BUILTIN[name]]
        chosen += [Detector(p.name, re.compile(p.regex)) for p in config.patterns]
        self.detectors = chosen if config.enabled else []

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        found: Counter[str] = Counter()
        for det in self.detectors:

            def mask(m: re.Match[str], det: Detector = det) -> str:
                value = m.group(det.group)
                if value is None or (det.check is not None and not det.check(value)):
                    return m.group(0)
                found[det.name] += 1
                start, end = m.start(det.group) - m.start(0), m.end(det.group) - m.start(0)
                whole = m.group(0)
                return whole[:start] + self.config.mask.format(name=det.name) + whole[end:]

            text = det.pattern.sub(mask, text)
        return text, found

    def messages(self, req: MessagesCreate) -> tuple[MessagesCreate, list[dict[str, int]]]:
        """Mask whole messages (and the conversation's context) before the MemReader splits them, so a
        secret that would straddle two chunks is still caught. Returns what was masked per message."""
        if not self.detectors:
            return req, [{} for _ in req.messages]
        found: list[dict[str, int]] = []
        messages = []
        for msg in req.messages:
            content, hits = self.redact(msg.content)
            found.append(dict(hits))
            messages.append(msg.model_copy(update={"content": content}) if hits else msg)
        context = self.redact(req.context)[0] if req.context else req.context
        return req.model_copy(update={"messages": messages, "context": context}), found

    def apply(self, item: M, keep: Collection[str] = ()) -> tuple[M, dict[str, int]]:
        """A memory (or an update) with its text, context and string metadata masked, and what was masked.
        ``keep``: metadata keys left as they are (a bundle import's own provenance keys)."""
        if not self.detectors:
            return item, {}
        found: Counter[str] = Counter()
        changes: dict[str, object] = {}
        for field in ("text", "context"):
            value = getattr(item, field, None)
            if isinstance(value, str):
                changes[field], hits = self.redact(value)
                found += hits
        metadata = getattr(item, "metadata", None)
        if metadata:
            masked = dict(metadata)
            for key, value in masked.items():
                if isinstance(value, str) and key not in keep:
                    masked[key], hits = self.redact(value)
                    found += hits
            changes["metadata"] = masked
        return (item.model_copy(update=changes) if found else item), dict(found)
