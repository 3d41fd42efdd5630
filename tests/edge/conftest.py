"""Fixtures for the node tests; the helpers themselves live in node_helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_helpers import Listener, NodeProcess


@pytest.fixture
def listener_factory(mosquitto: Any) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(yard: str, **kwargs: Any) -> Listener:
        listener = Listener(mosquitto.port, yard, **kwargs)
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


@pytest.fixture
def node_processes() -> Iterator[Callable[..., NodeProcess]]:
    made: list[NodeProcess] = []

    def start(config: Path, **kwargs: Any) -> NodeProcess:
        node = NodeProcess(config, **kwargs)
        made.append(node)
        return node

    yield start
    for node in made:
        node.close()
