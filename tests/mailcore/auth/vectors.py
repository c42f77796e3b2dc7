"""Readers for the copied test vectors (tests/data), shared by the DKIM and ARC tests, and hostile
key records a DNS zone could publish."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

DATA = Path(__file__).parents[2] / "data"


def read_mail_auth(path: Path) -> tuple[dict[str, dict[str, Any]], bytes]:
    """A mail-auth vector: `name value` DNS lines, a blank line, then the message."""
    data = path.read_bytes()
    dns_part, message = data.split(b"\n\n", 1)
    records: dict[str, dict[str, Any]] = {}
    for line in dns_part.decode("utf-8").splitlines():
        if line.strip():
            name, value = line.split(" ", 1)
            records.setdefault(name, {"TXT": []})["TXT"].append(value)
    return records, message


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 128 else (
        bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes((size.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def rsa_key_record(modulus_bits: int, exponent_bits: int) -> str:
    """A DKIM key record (RFC 6376 §3.6.1) for an RSA public key of these sizes, built by hand: no
    library makes a key with a 4096-bit public exponent, but a hostile zone can publish one."""
    rng = random.Random(modulus_bits * 100_003 + exponent_bits)
    modulus = rng.getrandbits(modulus_bits) | (1 << (modulus_bits - 1)) | 1
    exponent = rng.getrandbits(exponent_bits) | (1 << (exponent_bits - 1)) | 1
    rsa_encryption = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    public_key = _der(0x30, _der_int(modulus) + _der_int(exponent))
    spki = _der(0x30, rsa_encryption + _der(0x03, b"\x00" + public_key))
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"
