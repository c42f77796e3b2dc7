"""DKIM (RFC 6376; ed25519-sha256 from RFC 8463): verify every signature of a message, and sign.

dkimpy does the canonicalisation and the crypto. This module owns the seams: dkimpy runs in a worker
thread (so neither DNS waits nor RSA/ed25519 maths run on the loop thread), its key lookups go through
our `DNSLookup` via its `dnsfunc=` parameter and `mailcore.dns.bridge`, and dkimpy's outcomes are mapped
to RFC 8601 result words:

    pass       the signature verified
    fail       the signature or the body hash did not verify (RFC 6376 §6.1.3)
    neutral    the signature could not be processed: syntax errors, missing tags, expired (RFC 8601 §2.7.1)
    permerror  the key: none published (NXDOMAIN/NODATA), revoked, unparsable, too small (RFC 6376 §6.1.2),
               or not allowing the signature's hash (h=); or a historic algorithm: rsa-sha1 (RFC 8301 §3.1)
    temperror  the key could not be fetched (DNS timeout, SERVFAIL) (RFC 6376 §6.1.2 step 3)
    none       the message carries no signature

It must not decide what a result does to the message (that is DMARC and `mailcore.auth.check`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import InvalidTagValueList, parse_tag_value

from mailcore.address import AddressError, normalize_domain
from mailcore.dns import DNSLookup, DNSNotFound, DNSTempError
from mailcore.dns.bridge import LoopBridge
from mailcore.lineends import normalize_crlf

log = logging.getLogger(__name__)


class LibraryLogger:
    """What dkimpy logs (every bad signature it meets, at ERROR) goes to our log at DEBUG: a forged or
    broken signature on inbound mail is the peer's business, not an operator alert."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - the logging.Logger API dkimpy calls
        return self._log.isEnabledFor(logging.DEBUG)

    def _debug(self, msg: object, *args: object, **kwargs: object) -> None:
        self._log.debug(msg, *args)

    debug = info = warning = error = exception = _debug


_liblog = LibraryLogger(__name__ + ".dkimpy")

DEFAULT_LOOKUP_TIMEOUT = 10.0
MIN_RSA_BITS = 1024  # RFC 8301 §3.2
# dkimpy verifies RSA with Python's pow(), which holds the GIL for the whole exponentiation: its cost
# grows with the exponent's length times the modulus's length squared, so a key published with a long
# public exponent stalls the event loop thread too (a 16384-bit modulus with a 4096-bit exponent: 3 s).
# Bounds as OpenSSL's: OPENSSL_RSA_MAX_MODULUS_BITS and RSA_MAX_PUBEXP_BITS. Real keys use e=65537.
MAX_RSA_BITS = 16384
MAX_RSA_EXPONENT_BITS = 64

# Signed when present; From is signed once more than it occurs so no From can be added (RFC 6376 §8.15).
SIGNED_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To",
                  "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding")
# RFC 6376 §6.1: "Verifiers MAY limit the number of signatures they tries, in order to avoid denial-of-
# service attacks". Each one costs a key lookup, a canonicalisation and hash of the whole body (holding
# the GIL in dkimpy's regexes) and an RSA verification: 200 signatures on a 1 MB message were 15 s of
# CPU, and as many results in Authentication-Results. The first ones in header order (the newest
# signers) are verified; OpenDKIM verifies 3 by default (MaximumSignaturesToVerify).
MAX_SIGNATURES = 5
# dkimpy finds each name of h= by scanning the header block from the end: h= listing 5,000 names over a
# 20,000-field header block took 10 s of CPU for one signature. Real signers list under 50 (each signed
# field once or twice, RFC 6376 §5.4.2); more makes the signature neutral without verifying it.
MAX_SIGNED_FIELDS = 100
# dkimpy checks b= and bh= with [\s0-9A-Za-z+/]+[\s=]*$ and splits h= with \s*:\s*: both retry every
# position of a run of white space that does not match, k*k/2 steps per run, in one C call holding the
# GIL, before any key is fetched: a b= of "A", 10,000 folded spaces and "!" held the loop for 1.2 s,
# 100,000 for two minutes. Real values fold with a few spaces and are a few KB (a 16384-bit RSA b= is
# 2,732 characters); a signature whose b=, bh= or h= is longer, or folds with a longer run, is neutral
# without dkimpy looking at it.
MAX_TAG_VALUE = 8192
MAX_WSP_RUN = 64
_LONG_WSP_RUN = re.compile(rb"\s{%d}" % (MAX_WSP_RUN + 1))
# RFC 8301 §3.1: rsa-sha1 "MUST NOT be used for signing or verifying"; such signatures permanently fail.
HISTORIC_ALGORITHMS = frozenset({"rsa-sha1"})
ALGORITHMS = MappingProxyType({"rsa": "rsa-sha256", "rsa-sha256": "rsa-sha256",
              "ed25519": "ed25519-sha256", "ed25519-sha256": "ed25519-sha256"})


# What a signature gets when dkimpy raises something other than its own exceptions on it: it does on
# hostile tag values (x= or t= of over 4300 digits: int() refuses them; b= or bh= with bad base64
# padding: binascii.Error). The signature cannot be processed: neutral (RFC 8601 §2.7.1), never a
# crash of the whole check.
_LIBRARY_FAILURE = "signature could not be processed"


@dataclass(frozen=True)
class DKIMResult:
    """The outcome for one DKIM-Signature header (in header order)."""

    result: str
    domain: str = ""       # d=
    selector: str = ""     # s=
    algorithm: str = ""    # a=
    reason: str = ""
    identity: str = ""     # i= (for header.i in Authentication-Results)


class _KeyMissing(Exception):
    """No key record at the selector: RFC 6376 §6.1.2 step 3, PERMFAIL."""


class _KeyInvalid(Exception):
    """A key record that cannot be used: RFC 6376 §6.1.2 steps 4-7, PERMFAIL."""


def _lookup_key(bridge: LoopBridge, resolver: DNSLookup, name: bytes | str, timeout: float = 5, *,
                hash_name: bytes = b"sha256") -> bytes:
    """dkimpy's `dnsfunc`: the selector's TXT record. Called in the worker thread.

    `hash_name` is the hash of the signature being verified: a key whose h= does not list it is
    refused (RFC 6376 §3.6.1, §6.1.2 step 6), which dkimpy does not check."""
    qname = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    qname = qname.rstrip(".")
    try:
        records = bridge.call(functools.partial(resolver.txt, qname), f"{qname} TXT")
    except DNSNotFound as exc:
        raise _KeyMissing(f"no key for signature at {qname}") from exc
    # DNSTempError propagates: dkimpy catches only its own exceptions.
    record = records[0].encode("utf-8", "replace")
    try:
        pk, _size, _ktag, _tlsrpt = dkimpy.evaluate_pk(qname, record)
    except (dkimpy.KeyFormatError, binascii.Error, InvalidTagValueList, ValueError) as exc:
        raise _KeyInvalid(f"unusable key at {qname}: {exc}") from exc
    if pk is None:
        raise _KeyInvalid(f"key at {qname} is not for email")
    too_costly = rsa_key_too_costly(pk, _ktag)
    if too_costly:
        raise _KeyInvalid(f"key at {qname} refused: {too_costly}")
    allowed = _tags(record).get(b"h")
    if allowed is not None and hash_name not in {h.strip().lower() for h in allowed.split(b":")}:
        raise _KeyInvalid(f"key at {qname} does not allow {hash_name.decode()} (h=)")
    return record


def rsa_key_too_costly(pk: Any, ktag: bytes | None) -> str:
    """Why dkimpy must not verify with this parsed key (see MAX_RSA_BITS), or "" when it may."""
    if ktag != b"rsa" or not isinstance(pk, dict):
        return ""
    if pk["modulus"].bit_length() > MAX_RSA_BITS:
        return f"RSA modulus over {MAX_RSA_BITS} bits"
    if pk["publicExponent"].bit_length() > MAX_RSA_EXPONENT_BITS:
        return f"RSA public exponent over {MAX_RSA_EXPONENT_BITS} bits"
    return ""


# dkimpy's relaxed body canonicalisation starts with re.sub(b"[\t ]+\r\n", ...) over the whole body: in a
# run of k spaces not followed by CRLF it retries every start, k*k/2 steps, in one C call that holds
# the GIL. A body of 1,000 lines of 990 spaces and an "x" held the event loop thread for 5 s (50 MB:
# minutes), for each relaxed signature, whether or not it verifies. RFC 6376 §3.4.4's first two steps
# (delete WSP before CRLF, make each WSP run one space) are done here first, linearly and a chunk at a
# time; dkimpy's pass over the result finds single spaces only and is linear. Its result is the same:
# both steps are idempotent, and together they are what its two substitutions compute.
_WSP_RUN = re.compile(rb"[\t ]+")
_RELAX_CHUNK = 1 << 20


def pre_relax(body: bytes) -> bytes:
    """`body` (CRLF lines) with every run of WSP made one space and the space before each CRLF removed."""
    out = []
    start = 0
    while start < len(body):
        end = body.find(b"\r\n", start + _RELAX_CHUNK)
        end = len(body) if end < 0 else end + 2  # cut after a CRLF: no WSP run spans one
        out.append(_WSP_RUN.sub(b" ", body[start:end]).replace(b" \r\n", b"\r\n"))
        start = end
    return b"".join(out)


class _LinearRelaxedBody:
    """Gives dkimpy's verify_sig_process, for each signature, the body it canonicalises: the original
    for simple, `pre_relax` of it (made once) for relaxed. Mixed into dkimpy's DKIM and ARC."""

    body: bytes
    _original: bytes | None = None
    _relaxed: bytes | None = None

    def verify_sig_process(self, sig: dict[bytes, bytes], include_headers: Any, sig_header: Any,
                           dnsfunc: Any) -> bool:
        if self._original is None:
            self._original = self.body
        parts = (sig.get(b"c") or b"simple/simple").split(b"/")
        if len(parts) == 2 and parts[1] == b"relaxed":
            if self._relaxed is None:
                self._relaxed = pre_relax(self._original)
            self.body = self._relaxed
        else:
            self.body = self._original
        return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)  # type: ignore[misc]


class LinearDKIM(_LinearRelaxedBody, dkimpy.DKIM):
    """dkimpy's DKIM verifier with a linear relaxed body canonicalisation (see `pre_relax`)."""


class LinearARC(_LinearRelaxedBody, dkimpy.ARC):
    """dkimpy's ARC verifier with a linear relaxed body canonicalisation (see `pre_relax`)."""


def tags_too_costly(tags: dict[bytes, bytes]) -> str:
    """Why dkimpy must not parse these signature tags (see MAX_TAG_VALUE), or "" when it may."""
    for name in (b"b", b"bh", b"h"):
        value = tags.get(name, b"")
        if _LONG_WSP_RUN.search(value):
            return f"{name.decode()}= folds with more than {MAX_WSP_RUN} white space characters in a row"
        if len(value) > MAX_TAG_VALUE:
            return f"{name.decode()}= is longer than {MAX_TAG_VALUE} characters"
    return ""


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return parse_tag_value(value)
    except InvalidTagValueList:
        return {}


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace")


def _describe(tags: dict[bytes, bytes]) -> dict[str, str]:
    return {"domain": _text(tags.get(b"d")).lower(), "selector": _text(tags.get(b"s")),
            "algorithm": _text(tags.get(b"a")).lower(), "identity": _text(tags.get(b"i"))}


def _verify_all(raw: bytes, dnsfunc: Any, minkey: int) -> list[DKIMResult]:
    """Runs in the worker thread."""
    try:
        verifier = LinearDKIM(raw, logger=_liblog, minkey=minkey)
    except (dkimpy.MessageFormatError, IndexError) as exc:  # IndexError: the first line is a continuation
        return [DKIMResult("permerror", reason=f"message header unparsable: {exc or 'continuation first'}")]
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    if not signatures:
        return [DKIMResult("none", reason="message not signed")]
    results = []
    for idx, value in enumerate(signatures[:MAX_SIGNATURES]):
        tags = _tags(value)
        info = _describe(tags)
        if info["algorithm"] in HISTORIC_ALGORITHMS:
            results.append(DKIMResult("permerror", reason=f"{info['algorithm']} is not accepted (RFC 8301)",
                                      **info))
            continue
        too_costly = tags_too_costly(tags)
        if too_costly:
            results.append(DKIMResult("neutral", reason=too_costly, **info))
            continue
        if tags.get(b"h", b"").count(b":") >= MAX_SIGNED_FIELDS:
            results.append(DKIMResult("neutral", reason=f"h= lists more than {MAX_SIGNED_FIELDS} header fields",
                                      **info))
            continue
        hash_name = info["algorithm"].rpartition("-")[2].encode("ascii", "replace")
        try:
            ok = verifier.verify(idx=idx, dnsfunc=functools.partial(dnsfunc, hash_name=hash_name))
            result, reason = ("pass", "") if ok else ("fail", "signature did not verify")
        except DNSTempError as exc:
            result, reason = "temperror", f"key lookup failed: {exc.reason}"
        except _KeyMissing as exc:
            result, reason = "permerror", str(exc)
        except (_KeyInvalid, dkimpy.KeyFormatError, dkimpy.UnknownKeyTypeError) as exc:
            result, reason = "permerror", str(exc) or type(exc).__name__
        except dkimpy.ValidationError as exc:
            text = str(exc)
            if text.startswith("body hash mismatch"):
                result, reason = "fail", "body hash did not verify"
            else:
                result, reason = "neutral", text
        except (dkimpy.MessageFormatError, dkimpy.ParameterError) as exc:
            result, reason = "neutral", str(exc)
        except dkimpy.DKIMException as exc:
            result, reason = "permerror", str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - dkimpy on hostile tags: see _LIBRARY_FAILURE
            log.debug("dkimpy failed on a signature", exc_info=exc)
            result, reason = "neutral", _LIBRARY_FAILURE
        results.append(DKIMResult(result, reason=reason, **info))
    if len(signatures) > MAX_SIGNATURES:
        # RFC 8601 §2.7.1 policy: signed, but not acceptable to us (not evaluated): one result for all.
        results.append(DKIMResult("policy", reason=f"{len(signatures) - MAX_SIGNATURES} more signatures "
                                                   f"not evaluated (at most {MAX_SIGNATURES})"))
    return results


async def verify_dkim(resolver: DNSLookup, raw: bytes, *, minkey: int = MIN_RSA_BITS,
                      lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT) -> list[DKIMResult]:
    """Verify every DKIM-Signature of `raw` (a whole message, CRLF or LF line ends).

    Returns one result per signature in header order, or a single `none` result for an unsigned
    message. Never raises for anything the message or DNS can do."""
    bridge = LoopBridge(lookup_timeout)
    dnsfunc = functools.partial(_lookup_key, bridge, resolver)
    return await bridge.run(_verify_all, raw, dnsfunc, minkey)


@functools.lru_cache(maxsize=64)
def _private_key_for_dkimpy(private_key_pem: bytes | str, algorithm: str) -> bytes:
    """The key in the form dkimpy takes, remembered per PEM: loading an RSA PEM with `cryptography`
    validates the key (about 85 ms for 2048 bits), five times the cost of the signature itself, and the
    queue signs every message of a domain with the same key. Keys come from our own store, so a
    cached conversion cannot go stale: a new key is a new PEM."""
    pem = private_key_pem.encode("ascii") if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(pem, password=None)
    if algorithm == "ed25519-sha256":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("ed25519-sha256 needs an Ed25519 private key")
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return base64.b64encode(seed)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("rsa-sha256 needs an RSA private key")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def sign_message(raw: bytes, domain: str, selector: str, private_key_pem: bytes | str,
                 algorithm: str = "rsa-sha256") -> bytes:
    """Sign `raw` and return the DKIM-Signature header field (CRLF-terminated) to prepend.

    Bare CRs and LFs become CRLF first (`mailcore.lineends.normalize_crlf`, the rule smtp_out sends by),
    so the signature holds for the message as sent; a caller sending it itself must send
    `normalize_crlf(raw)`. relaxed/relaxed canonicalisation; the header
    fields of `SIGNED_HEADERS` that are present are signed, From once more than it occurs.
    `algorithm` is "rsa-sha256" or "ed25519-sha256" (RFC 8463). CPU-bound: call it in a thread from
    async code. `domain` may be internationalised (d= is its A-label form, RFC 6376 §3.5). Raises
    ValueError for a key that does not suit the algorithm, a message without From or whose header dkimpy
    cannot read (a field without a colon, a continuation first, an 8-bit field name)."""
    alg = ALGORITHMS.get(algorithm.lower())
    if alg is None:
        raise ValueError(f"unsupported DKIM algorithm {algorithm!r}")
    key = _private_key_for_dkimpy(private_key_pem, alg)
    message = normalize_crlf(raw)
    try:
        d = normalize_domain(domain).encode("ascii")
    except AddressError as exc:
        raise ValueError(f"cannot sign for domain {domain!r}: {exc}") from exc
    try:
        signer = dkimpy.DKIM(message, logger=_liblog, signature_algorithm=alg.encode())
    except (dkimpy.MessageFormatError, IndexError) as exc:  # IndexError: a continuation line first
        raise ValueError(f"message header unreadable for DKIM: {exc or 'continuation first'}") from exc
    present = [name.decode("ascii", "replace").lower() for name, _ in signer.headers]
    wanted = {h.lower() for h in SIGNED_HEADERS}
    include = [h for h in present if h in wanted]
    if "from" not in include:
        raise ValueError("a message without From cannot be DKIM-signed (RFC 6376 §5.4)")
    include.append("from")
    try:
        header = signer.sign(selector.encode("ascii"), d, key,
                             canonicalize=(b"relaxed", b"relaxed"),
                             include_headers=[h.encode("ascii") for h in include])
    except dkimpy.DKIMException as exc:
        raise ValueError(f"DKIM signing failed: {exc}") from exc
    return header


def public_record(private_key_pem: bytes | str) -> str:
    """The value of the selector's DNS TXT record (RFC 6376 §3.6.1) for a private key PEM:
    `v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>` or `v=DKIM1; k=ed25519; p=<raw key>` (RFC 8463 §4).
    Raises ValueError for anything but an RSA or Ed25519 key."""
    pem = private_key_pem.encode("ascii") if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        k = "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        k = "rsa"
    else:
        raise ValueError("a DKIM key must be RSA or Ed25519")
    return f"v=DKIM1; k={k}; p={base64.b64encode(public).decode('ascii')}"


def generate_key(algorithm: str = "rsa", bits: int = 2048) -> tuple[str, str]:
    """A new signing key: (private key PEM, value of the selector's DNS TXT record).

    "rsa" (PKCS#8 PEM, `bits` >= 1024; RFC 8301 §3.2) or "ed25519" (RFC 8463 §4). CPU-bound (RSA
    takes up to a second): call it in a thread from async code."""
    kind = algorithm.lower().removesuffix("-sha256")
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits (RFC 8301 §3.2)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise ValueError(f"unsupported key algorithm {algorithm!r}")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode("ascii")
    return pem, public_record(pem)
