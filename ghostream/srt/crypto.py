"""SRT encryption: key material messages and AES-CTR of data payloads, as libsrt does it.

A passphrase never travels: the caller wraps a random stream key (SEK) with a
key derived from the passphrase (KEK, PBKDF2) and sends the wrapped key in
the handshake.  A listener with another passphrase fails to unwrap it (RFC
3394 has an integrity check), which is how a wrong passphrase is detected and
rejected before any data flows.  Each data packet is encrypted with AES-CTR
under an IV built from the salt and the packet's sequence number, so a
retransmission produces the same bytes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

KK_EVEN = 1
KK_ODD = 2
KK_BOTH = 3
KM_STATE_NOSECRET = 3
KM_STATE_BADSECRET = 4

CIPHER_AES_CTR = 2
SALT_LENGTH = 16
KEY_LENGTHS = (16, 24, 32)
PBKDF2_ITERATIONS = 2048
_KM_HEADER = struct.Struct("!BHBIBBBBHBB")
_KM_FIRST_BYTE = 0x12  # version 1, packet type 2 (KM message)
_KM_SIGN = 0x2029  # "HAI" PnP id
_SE_MPEGTS_SRT = 2


class CryptoError(ValueError):
    """Key material or an encrypted packet we cannot use."""


class BadSecret(CryptoError):
    """The key material was wrapped with another passphrase."""


def check_passphrase(passphrase: str) -> None:
    if not 10 <= len(passphrase) <= 79:
        raise ValueError("an SRT passphrase has 10 to 79 characters")


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """A KM message: the wrapped stream key(s) and the salt, as in KMREQ/KMRSP."""

    key_flags: int
    salt: bytes
    key_length: int
    wrapped_keys: bytes
    cipher: int = CIPHER_AES_CTR

    @classmethod
    def parse(cls, data: bytes) -> KeyMaterial:
        if len(data) < _KM_HEADER.size + SALT_LENGTH:
            raise CryptoError(f"key material of {len(data)} bytes is too short")
        first, sign, kk, _keki, cipher, _auth, _se, _r2, _r3, slen4, klen4 = _KM_HEADER.unpack_from(
            data
        )
        if first != _KM_FIRST_BYTE or sign != _KM_SIGN:
            raise CryptoError("not an SRT key material message")
        key_flags = kk & 0x3
        salt_length, key_length = slen4 * 4, klen4 * 4
        if cipher != CIPHER_AES_CTR:
            raise CryptoError(f"cipher {cipher} is not supported (AES-CTR only)")
        if key_flags == 0 or salt_length != SALT_LENGTH or key_length not in KEY_LENGTHS:
            raise CryptoError("key material has an unsupported key or salt length")
        keys = 2 if key_flags == KK_BOTH else 1
        offset = _KM_HEADER.size
        end = offset + SALT_LENGTH + 8 + keys * key_length
        if len(data) < end:
            raise CryptoError("key material is truncated")
        return cls(
            key_flags=key_flags,
            salt=bytes(data[offset : offset + SALT_LENGTH]),
            key_length=key_length,
            wrapped_keys=bytes(data[offset + SALT_LENGTH : end]),
            cipher=cipher,
        )

    def to_bytes(self) -> bytes:
        header = _KM_HEADER.pack(
            _KM_FIRST_BYTE,
            _KM_SIGN,
            self.key_flags,
            0,
            self.cipher,
            0,
            _SE_MPEGTS_SRT,
            0,
            0,
            SALT_LENGTH // 4,
            self.key_length // 4,
        )
        return header + self.salt + self.wrapped_keys


def parse_km_state(data: bytes) -> int | None:
    """The KM state of a one-word KMRSP (a refusal), or None for an echoed KM."""
    if len(data) != 4:
        return None
    big, little = struct.unpack("!I", data)[0], struct.unpack("<I", data)[0]
    for value in (big, little):
        if value in (KM_STATE_NOSECRET, KM_STATE_BADSECRET):
            return value
    return big


def _kek(passphrase: str, salt: bytes, key_length: int) -> bytes:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA1(),  # noqa: S303 - fixed by the SRT protocol
        length=key_length,
        salt=salt[-8:],
        iterations=PBKDF2_ITERATIONS,
    )
    return kdf.derive(passphrase.encode())


class StreamCipher:
    """The stream keys and salt of one connection."""

    def __init__(self, passphrase: str, salt: bytes, keys: dict[int, bytes]) -> None:
        self._passphrase = passphrase
        self.salt = salt
        self._keys = keys
        self._algorithms = {flag: algorithms.AES(key) for flag, key in keys.items()}
        self._salt_prefix = int.from_bytes(salt[:14], "big")

    @property
    def key_length(self) -> int:
        return len(next(iter(self._keys.values())))

    @classmethod
    def generate(cls, passphrase: str, key_length: int = 16) -> StreamCipher:
        check_passphrase(passphrase)
        if key_length not in KEY_LENGTHS:
            raise ValueError("an SRT key has 16, 24 or 32 bytes")
        return cls(passphrase, os.urandom(SALT_LENGTH), {KK_EVEN: os.urandom(key_length)})

    @classmethod
    def from_key_material(cls, km: KeyMaterial, passphrase: str) -> StreamCipher:
        return cls(passphrase, km.salt, _unwrap(km, passphrase))

    def key_material(self, key_flags: int = KK_EVEN) -> KeyMaterial:
        flags = [KK_EVEN, KK_ODD] if key_flags == KK_BOTH else [key_flags]
        plain = b"".join(self._keys[flag] for flag in flags)
        kek = _kek(self._passphrase, self.salt, self.key_length)
        return KeyMaterial(
            key_flags=key_flags,
            salt=self.salt,
            key_length=self.key_length,
            wrapped_keys=aes_key_wrap(kek, plain),
        )

    def update(self, km: KeyMaterial) -> None:
        """Take a peer's new key(s) (in-band rekeying)."""
        for flag, key in _unwrap(km, self._passphrase).items():
            self._keys[flag] = key
            self._algorithms[flag] = algorithms.AES(key)
        self.salt = km.salt
        self._salt_prefix = int.from_bytes(km.salt[:14], "big")

    def encrypt(self, seq: int, payload: bytes, key_flag: int = KK_EVEN) -> bytes:
        algorithm = self._algorithms.get(key_flag)
        if algorithm is None:
            raise CryptoError(f"no {'even' if key_flag == KK_EVEN else 'odd'} key")
        # IV = salt[0:14] XOR (seq in bytes 10..13), then a 16-bit block counter.
        iv = ((self._salt_prefix ^ seq) << 16).to_bytes(16, "big")
        encryptor = Cipher(algorithm, modes.CTR(iv)).encryptor()
        return encryptor.update(payload) + encryptor.finalize()

    decrypt = encrypt  # CTR mode: the same operation both ways


def _unwrap(km: KeyMaterial, passphrase: str) -> dict[int, bytes]:
    kek = _kek(passphrase, km.salt, km.key_length)
    try:
        plain = aes_key_unwrap(kek, km.wrapped_keys)
    except (InvalidUnwrap, ValueError) as exc:
        raise BadSecret("key material does not unwrap with this passphrase") from exc
    if km.key_flags == KK_BOTH:
        if len(plain) != 2 * km.key_length:
            raise CryptoError("key material holds the wrong number of keys")
        return {KK_EVEN: plain[: km.key_length], KK_ODD: plain[km.key_length :]}
    if len(plain) != km.key_length:
        raise CryptoError("key material holds a key of the wrong length")
    return {km.key_flags: plain}
