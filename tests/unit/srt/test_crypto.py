"""SRT key material and AES-CTR; libsrt interop is in tests/interop/test_srt_interop.py."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import example, given
from hypothesis import strategies as st

from ghostream.srt.crypto import (
    KK_BOTH,
    KK_EVEN,
    KK_ODD,
    BadSecret,
    CryptoError,
    KeyMaterial,
    StreamCipher,
    parse_km_state,
)

PASSPHRASE = "0123456789abc"


@pytest.mark.parametrize("key_length", [16, 24, 32])
def test_key_material_round_trip_and_unwrap(key_length: int) -> None:
    sender = StreamCipher.generate(PASSPHRASE, key_length)
    km = KeyMaterial.parse(sender.key_material().to_bytes())
    assert km.key_length == key_length and km.key_flags == KK_EVEN
    receiver = StreamCipher.from_key_material(km, PASSPHRASE)
    payload = bytes(range(256)) * 5
    encrypted = sender.encrypt(1234, payload)
    assert encrypted != payload
    assert receiver.decrypt(1234, encrypted, KK_EVEN) == payload


def test_wrong_passphrase_is_bad_secret() -> None:
    km = StreamCipher.generate(PASSPHRASE).key_material()
    with pytest.raises(BadSecret):
        StreamCipher.from_key_material(km, "another passphrase")


def test_counter_block_is_salt_xor_sequence_number() -> None:
    cipher = StreamCipher.generate(PASSPHRASE)
    km = cipher.key_material()
    seq = 0x12345678
    salt = int.from_bytes(km.salt, "big")
    # Independent construction: the 16-byte block as one integer.
    iv = ((salt >> 16) ^ seq) << 16
    key = cipher._keys[KK_EVEN]
    expected = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    payload = b"\x47" * 1316
    assert cipher.encrypt(seq, payload) == expected.update(payload)


def test_rekey_with_both_keys_decrypts_either_parity() -> None:
    sender = StreamCipher.generate(PASSPHRASE)
    receiver = StreamCipher.from_key_material(sender.key_material(), PASSPHRASE)
    sender._keys[KK_ODD] = bytes(16)
    sender._algorithms[KK_ODD] = algorithms.AES(bytes(16))
    receiver.update(KeyMaterial.parse(sender.key_material(KK_BOTH).to_bytes()))
    for flag in (KK_EVEN, KK_ODD):
        assert receiver.decrypt(9, sender.encrypt(9, b"data", flag), flag) == b"data"


def test_missing_key_parity_is_an_error() -> None:
    with pytest.raises(CryptoError):
        StreamCipher.generate(PASSPHRASE).decrypt(1, b"x", KK_ODD)


def test_passphrase_length_is_checked() -> None:
    with pytest.raises(ValueError):
        StreamCipher.generate("short")


def test_refusal_word_in_either_byte_order() -> None:
    assert parse_km_state(b"\x00\x00\x00\x04") == 4
    assert parse_km_state(b"\x03\x00\x00\x00") == 3
    assert parse_km_state(StreamCipher.generate(PASSPHRASE).key_material().to_bytes()) is None


VALID_KM = StreamCipher.generate(PASSPHRASE).key_material().to_bytes()
BOTH_KEYS_KM = KeyMaterial(KK_BOTH, bytes(16), 32, bytes(8 + 2 * 32)).to_bytes()


@st.composite
def damaged_key_material(draw) -> bytes:
    """A real KM message with some bytes changed, cut or extended: most of it still parses."""
    data = bytearray(draw(st.sampled_from([VALID_KM, BOTH_KEYS_KM])))
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=8))


@given(st.one_of(st.binary(max_size=120), damaged_key_material()))
@example(VALID_KM)
@example(VALID_KM[:-1])
@example(BOTH_KEYS_KM)
@example(BOTH_KEYS_KM[:-8])
@example(b"")
def test_key_material_parses_to_what_it_says_or_is_a_crypto_error(data: bytes) -> None:
    """Whatever parses is a KM of a supported shape that writes back to the bytes it read."""
    try:
        km = KeyMaterial.parse(data)
    except CryptoError:
        return
    keys = 2 if km.key_flags == KK_BOTH else 1
    assert km.key_length in (16, 24, 32) and km.key_flags in (KK_EVEN, KK_ODD, KK_BOTH)
    assert len(km.wrapped_keys) == 8 + keys * km.key_length
    written = km.to_bytes()
    # The header's reserved and informational fields are written canonically; the rest is read.
    assert written[16:] == data[16 : len(written)] and KeyMaterial.parse(written) == km
