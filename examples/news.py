"""A news feed: headlines on section topics; the page resumes with Last-Event-ID.

python examples/news.py [--count N]
"""

from __future__ import annotations

import json
import random
import time

from _publisher import run

SECTIONS = ["world", "science", "sport"]
WORDS = ["Hub", "Stream", "Event", "Python", "Topic", "Browser", "Comet", "Library"]


def headline(n: int) -> tuple[str, str]:
    section = SECTIONS[n % len(SECTIONS)]
    title = " ".join(random.sample(WORDS, 3)) + f" #{n}"
    body = {"section": section, "title": title, "at": time.strftime("%H:%M:%S")}
    return f"https://example.com/news/{section}", json.dumps(body)


if __name__ == "__main__":
    run(headline, 2.0, "headlines")
