"""The same client against a real FreeSWITCH, when one is available.

Set ``SWITCHDESK_TEST_ESL=host:port:password`` (mod_callcenter loaded) to run;
skipped otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from engine.esl.client import ESLClient
from engine.esl.errors import ESLError

_TARGET = os.environ.get("SWITCHDESK_TEST_ESL")
pytestmark = [
    pytest.mark.real_freeswitch,
    pytest.mark.skipif(not _TARGET, reason="set SWITCHDESK_TEST_ESL=host:port:password"),
]


@pytest.fixture
def client() -> Iterator[ESLClient]:
    host, port, password = (_TARGET or "::").split(":", 2)
    c = ESLClient(host, int(port), password, events=["HEARTBEAT"])
    c.connect(5)
    yield c
    c.close()


def test_version(client: ESLClient) -> None:
    assert client.api("version").startswith("FreeSWITCH Version")


def test_callcenter_queue_list(client: ESLClient) -> None:
    text = client.api("callcenter_config queue list")
    assert text.endswith("+OK\n")


def test_callcenter_error_text(client: ESLClient) -> None:
    with pytest.raises(ESLError, match="-ERR"):
        client.api("callcenter_config queue load no-such-queue@nowhere")


def test_bgapi_status(client: ESLClient) -> None:
    assert client.bgapi("status", timeout=10).startswith("UP ")


def test_api_many_in_order(client: ESLClient) -> None:
    results = client.api_many(["hostname", "version", "hostname"], timeout=10)
    assert results[0] == results[2] and str(results[1]).startswith("FreeSWITCH Version")
