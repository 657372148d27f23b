"""Which device-relative topics belong to ingest."""

from uuid import UUID

import pytest

from gateway.ingest import is_ingest_topic, route
from gateway.ingest.topics import BadReportTopic, ModelTopic, ReportByName, ReportByUuid

U = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize("topic, expected", [
    ("model", ModelTopic()),
    ("report/thermo/temp", ReportByName("thermo", "temp")),
    (f"report/{U}", ReportByUuid(UUID(U))),
    (f"report/{U.upper()}", BadReportTopic()),  # canonical lowercase only
    ("report/thermo", BadReportTopic()),
    ("report/a/b/c", BadReportTopic()),
    ("report//temp", BadReportTopic()),
    ("report/", BadReportTopic()),
    ("model/accepted", None),
    ("errors", None),
    ("control/thermo/temp", None),
    ("reports/thermo/temp", None),
    ("chat/anything", None),
])
def test_route_classifies_device_topics(topic, expected):
    assert route(topic) == expected
    assert is_ingest_topic(topic) == (expected is not None)
