"""Mail addresses: parsing, normalising for lookup, plus-addressing.

Owns the one strict definition of "an address we will route": `local@domain` with a dot-atom or a quoted
local part free of routing characters, a DNS domain (no IP literal, no trailing dot). Relay tricks
(percent hack, bang paths, source routes, `@` hidden in quotes) are refused here, once, for every
protocol. It does no DNS and knows no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 5321 §4.5.3.1.1 / §4.5.3.1.2: local part up to 64 octets, domain up to 255.
MAX_LOCAL = 64
MAX_DOMAIN = 255

_ATEXT = r"[A-Za-z0-9!#$&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-\u0080-\U0010FFFF]{1,63}(?<!-)")


class AddressError(ValueError):
    """An address we refuse to route; the message says why (safe to show to a client)."""


@dataclass(frozen=True)
class Address:
    """A parsed address. `local` keeps its case; `domain` is lower-case A-label form."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """The lookup form: lower-case local part and domain."""
        return f"{self.local.lower()}@{self.domain}"

    @property
    def base_key(self) -> str:
        """The lookup form with any +tag removed (plus-addressing: user+tag@ delivers to user@)."""
        local = self.local.lower()
        if "+" in local[1:]:
            local = local.split("+", 1)[0]
        return f"{local}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        """Whether this address needs SMTPUTF8 to be sent."""
        return str(self).isascii()


def normalize_domain(domain: str) -> str:
    """Lower-case a domain and convert internationalised labels to A-labels (xn--)."""
    domain = domain.strip().lower()
    if not domain or len(domain) > MAX_DOMAIN:
        raise AddressError("invalid domain")
    if domain.endswith("."):
        raise AddressError("trailing dot in domain")
    labels = domain.split(".")
    if len(labels) < 2 and domain != "localhost":
        raise AddressError("domain must be fully qualified")
    if labels[-1].isascii() and labels[-1].isdigit():
        # RFC 3696 §2: no top-level domain is all-numeric, so `1.2.3.4` is an IP address written without
        # the brackets of an address literal, which we do not accept either
        raise AddressError("domain must not end in a numeric label (an IP address?)")
    out = []
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise AddressError("invalid domain")
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                raise AddressError("invalid internationalised domain") from None
        out.append(label)
    return ".".join(out)


def parse_address(text: str) -> Address:
    """Parse a bare address (no angle brackets). Raise AddressError for anything we will not route."""
    if not text or any(c in text for c in "\r\n\0 \t<>"):
        raise AddressError("invalid address")
    if text.startswith("@"):
        raise AddressError("source routes are not accepted")
    if text.startswith('"'):
        end = _quoted_end(text)
        local, rest = text[: end + 1], text[end + 1:]
        if not rest.startswith("@"):
            raise AddressError("invalid address")
        domain = rest[1:]
        inner = local[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if any(c in inner for c in "@%!:"):
            raise AddressError("routing characters in quoted local part")
        if _DOT_ATOM.fullmatch(inner):
            local = inner  # RFC 5322 §3.4.1: "alice"@ and alice@ are the same mailbox; look it up as one
    else:
        local, sep, domain = text.rpartition("@")
        if not sep or not local:
            raise AddressError("address must be local@domain")
        if not _DOT_ATOM.fullmatch(local):
            raise AddressError("invalid local part")
        if "%" in local or "!" in local:
            raise AddressError("routing characters in local part")
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError("local part too long")
    if domain.startswith("["):
        raise AddressError("address literals are not accepted")
    return Address(local=local, domain=normalize_domain(domain))


def _quoted_end(text: str) -> int:
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    raise AddressError("unterminated quoted local part")
