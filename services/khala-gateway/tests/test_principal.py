"""Unit tests: claims -> principal, scope checks and revocation matching."""

import pytest

from khala_gateway.domain.principal import ClaimsError, Principal, revocation_matches


def claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "u1",
        "sid": "s1",
        "did": "d1",
        "exp": 1_700_000_000,
        "scope": ["org.acme.runs", "org.acme.run.*"],
    }
    base.update(over)
    return base


def test_from_claims() -> None:
    p = Principal.from_claims(claims())
    assert p.user_id == "u1" and p.session_id == "s1" and p.device_id == "d1"
    assert p.expires_at_ms == 1_700_000_000_000
    assert p.may_read("org.acme.runs")
    assert p.may_read("org.acme.run.r9")
    assert not p.may_read("org.acme.workers")
    assert not p.may_read("org.other.runs")


@pytest.mark.parametrize(
    "bad", [{"sub": ""}, {"sub": None}, {"exp": "soon"}, {"scope": [1]}, {"scope": {"a": 1}}]
)
def test_bad_claims(bad: dict[str, object]) -> None:
    with pytest.raises(ClaimsError):
        Principal.from_claims(claims(**bad))


def test_revocation_matching() -> None:
    p = Principal.from_claims(claims())

    def match(kind: int, sessions: tuple[str, ...] = (), user: str = "", device: str = "") -> bool:
        return revocation_matches(
            p, kind=kind, session_ids=sessions, user_id=user, device_id=device
        )

    assert match(1, ("s0", "s1"))
    assert not match(1, ("s2",), user="u1")  # a session revocation names sessions only
    assert match(3, user="u1")
    assert not match(3, user="u2")
    assert match(2, device="d1")
    assert match(2, device="d1", user="u1")
    assert not match(2, device="d1", user="u2")
    assert not match(2, device="d2")
