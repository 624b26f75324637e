"""Signed acknowledgements: what travels on ``lifeline.acks`` carries proof of its origin.

The acknowledgement page and ``lifeline oncall ack`` sign every :class:`AckRequest`; the
notifier applies only records whose signature verifies. Anyone who can write to Kafka but
does not hold the notifier's secret can therefore not stop an escalation: a forged,
unsigned or altered record is recorded as ``ignored`` (with the reason and its source
``topic[partition]@offset``) and counted as ``acks_forged``.

- *Key*: ``HMAC-SHA256(LIFELINE_NOTIFIER_LINK_SECRET, "lifeline/ack-signature/v1")`` — one
  secret to keep and rotate (the one that signs the links), but a key of its own, so a
  link's signature can never stand in for an acknowledgement's or the other way round
  (HKDF-Expand with one block and that label as ``info``).
- *Signed text*: ``"lifeline-ack-v1\\n"`` followed by the record's JSON form without
  ``signature`` — every field, defaults included, keys sorted, no spaces, UTF-8
  (timestamps as the contract writes them: millisecond RFC 3339 UTC). A field added to
  the contract later is covered without a change here.
- *Signature*: ``v1=<hex HMAC-SHA256(key, signed text)>``, compared in constant time.

Replays of a genuine record are refused by the escalation state: links carry their id,
command-line acknowledgements a random one (``token_id``), and a used id is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from schemas import codec
from schemas.oncall import AckRequest

KEY_LABEL = b"lifeline/ack-signature/v1"
PREFIX = b"lifeline-ack-v1\n"
VERSION = "v1="


def derive_key(link_secret: str) -> bytes:
    """The acknowledgement signing key derived from the notifier's link secret."""
    if len(link_secret) < 16:
        raise ValueError("LIFELINE_NOTIFIER_LINK_SECRET must be set (16 characters or more): "
                         "it also signs acknowledgements")
    return hmac.new(link_secret.encode(), KEY_LABEL + b"\x01", hashlib.sha256).digest()


def canonical(req: AckRequest) -> bytes:
    """The bytes a signature covers: every field but ``signature`` itself."""
    body = req.model_dump(mode="json", exclude={"signature"})
    return PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode()


def cli_token_id() -> str:
    """A random id for a command-line acknowledgement (a replay of the record is refused)."""
    return f"cli-{secrets.token_hex(10)}"


class AckSigner:
    def __init__(self, link_secret: str) -> None:
        self._key = derive_key(link_secret)

    def signature(self, req: AckRequest) -> str:
        return VERSION + hmac.new(self._key, canonical(req), hashlib.sha256).hexdigest()

    def sign(self, req: AckRequest) -> AckRequest:
        """``req`` with its signature (the fields are taken as they will be read back)."""
        plain = codec.ACK_REQUEST.decode(codec.ACK_REQUEST.encode(
            req.model_copy(update={"signature": None})))
        return plain.model_copy(update={"signature": self.signature(plain)})

    def problem(self, req: AckRequest) -> str | None:
        """Why ``req`` must not be applied (None: its signature verifies)."""
        if not req.signature:
            return "unsigned acknowledgement"
        if not req.signature.startswith(VERSION):
            return "acknowledgement signed with an unknown scheme"
        if not hmac.compare_digest(req.signature.encode(), self.signature(req).encode()):
            return "acknowledgement signature does not verify (forged or altered)"
        return None
