"""The README's Python section stays true: the names it imports exist, and the confluent-kafka
snippet's brokers are the listeners docker-compose.yml advertises (issue #14)."""

from __future__ import annotations

import re

from conftest import REPO

import smart_prefetch


def python_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("Python — the original module's API")
    return text[start:text.index("JavaScript (`fetch`", start)]


def test_the_readme_imports_only_what_the_package_has():
    names = set()
    for m in re.finditer(r"from smart_prefetch import ((?:[^\n\\]|\\\n)+)", python_section()):
        names |= {n.strip() for n in m.group(1).replace("\\", "").split(",") if n.strip()}
    assert {"record_query", "analyze_patterns", "predict_next_queries", "warmup_cache",
            "get_cache_status", "cached"} <= names
    for n in names:
        assert callable(getattr(smart_prefetch, n)), n


def test_the_producer_snippet_uses_the_listeners_compose_advertises():
    compose = (REPO / "docker-compose.yml").read_text()
    adv = re.search(r"KAFKA_ADVERTISED_LISTENERS:\s*(\S+)", compose).group(1)
    listeners = dict(item.split("://") for item in adv.split(","))
    section = python_section()
    host = re.search(r'"bootstrap\.servers":\s*"([^"]+)"', section).group(1)
    assert host == listeners["EXTERNAL"], (host, listeners)
    assert f'"{listeners["INTERNAL"]}" from a compose container' in section
