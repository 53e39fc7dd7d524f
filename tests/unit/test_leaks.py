"""The suite-wide secrets check finds what it is meant to find."""

from __future__ import annotations

from testkit.leaks import find_leaks


def test_finds_a_secret_and_a_bare_jwt_signature() -> None:
    """A whole secret and a token's signature alone both count as leaks; unrelated text does not."""
    secret = "s3cr3t-value-0123456789"
    token = "aaaa.bbbb.signature-part-xyz"
    assert find_leaks(f"log: {secret}", [secret, token]) == [secret[:12] + "..."]
    assert find_leaks("header sig=signature-part-xyz", [token]) == ["signature-pa..."]
    assert find_leaks("nothing here", [secret, token]) == []
