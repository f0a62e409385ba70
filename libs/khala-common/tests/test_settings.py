import pytest

from khala_common.settings import Env, SettingsError


def test_defaults_and_values() -> None:
    env = Env({"A": "7", "B": "true", "C": "x, y,,z", "D": "1.5"})
    assert env.integer("A", 1) == 7
    assert env.integer("MISSING", 3) == 3
    assert env.boolean("B", False) is True
    assert env.csv("C") == ("x", "y", "z")
    assert env.number("D", 0.0) == 1.5


@pytest.mark.parametrize(
    ("environ", "call"),
    [
        ({"PORT": "abc"}, lambda e: e.integer("PORT", 1)),
        ({"PORT": "-1"}, lambda e: e.integer("PORT", 1, minimum=0)),
        ({"FLAG": "maybe"}, lambda e: e.boolean("FLAG", False)),
        ({}, lambda e: e.string("REQUIRED")),
        ({"URL": "http://x"}, lambda e: e.url("URL", schemes=("amqp",))),
    ],
)
def test_errors_name_the_variable(environ: dict[str, str], call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError) as info:
        call(Env(environ))
    assert info.value.name == next(iter(environ), "REQUIRED")
    assert info.value.name in str(info.value)
