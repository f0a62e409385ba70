import pytest

from khala_common.topics import (
    Topic,
    TopicClass,
    is_valid_pattern,
    is_valid_topic,
    parse_topic,
    pattern_matches,
    run_topic,
    runs_topic,
    scope_allows,
)


@pytest.mark.parametrize(
    "name",
    ["org.acme.runs", "org.a-b_c.run.R1", "x", "a." * 100 + "b", "org." + "a" * 64 + ".runs"],
)
def test_valid_topics(name: str) -> None:
    assert is_valid_topic(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "org..runs",
        ".org.runs",
        "org.acme.runs.",
        "org.ac me.runs",
        "org.acme.*",
        "org.acme.#",
        "org." + "a" * 65 + ".runs",
        "a." * 127 + "bb",  # 256 bytes
        "org.é.runs",
        "org.acme.run.x\n",  # `$` would let a trailing newline through
        "org.acme\n.runs",
    ],
)
def test_invalid_topics(name: str) -> None:
    assert not is_valid_topic(name)


def test_parse_known_topics() -> None:
    assert parse_topic("org.acme.runs") == Topic("acme", TopicClass.RUNS)
    assert parse_topic("org.acme.workers") == Topic("acme", TopicClass.WORKERS)
    assert parse_topic("org.acme.run.r1") == Topic("acme", TopicClass.RUN, "r1")
    assert parse_topic("org.acme.worker.w1") == Topic("acme", TopicClass.WORKER, "w1")


@pytest.mark.parametrize(
    "name",
    [
        "org.acme",
        "org.acme.runs.r1",
        "org.acme.run",
        "team.acme.runs",
        "org.acme.jobs",
        "org.acme.run.r1.x",
    ],
)
def test_parse_rejects_unknown_shapes(name: str) -> None:
    assert parse_topic(name) is None


def test_builders_round_trip() -> None:
    assert parse_topic(runs_topic("acme")) == Topic("acme", TopicClass.RUNS)
    assert parse_topic(run_topic("acme", "r-9")) == Topic("acme", TopicClass.RUN, "r-9")
    assert TopicClass.RUNS.is_doc and not TopicClass.RUN.is_doc


def test_pattern_matching_is_segmentwise() -> None:
    assert pattern_matches("org.acme.run.*", "org.acme.run.r1")
    assert not pattern_matches("org.acme.run.*", "org.acme.runs")
    assert not pattern_matches("org.acme.run.*", "org.acme.run.r1.x")
    assert not pattern_matches("org.*.runs", "org.acme.run.r1")
    assert pattern_matches("org.*.runs", "org.other.runs")
    assert not pattern_matches("org.acme.runs", "org.acmex.runs")


def test_scope_allows_any_pattern() -> None:
    scope = ["org.acme.runs", "org.acme.run.*"]
    assert scope_allows(scope, "org.acme.run.abc")
    assert not scope_allows(scope, "org.other.runs")
    assert not scope_allows([], "org.acme.runs")


def test_pattern_validity_rejects_a_trailing_newline() -> None:
    assert is_valid_pattern("org.acme.*")
    assert not is_valid_pattern("org.acme.*\n")
    assert not is_valid_pattern("org.acme\n.*")


def test_pattern_validity() -> None:
    assert is_valid_pattern("org.acme.run.*")
    assert not is_valid_pattern("org.acme.#")
    assert not is_valid_pattern("")
