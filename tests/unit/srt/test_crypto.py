"""SRT key material and AES-CTR; libsrt interop is in tests/interop/test_srt_interop.py."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
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


@given(st.binary(max_size=120))
def test_parsing_arbitrary_key_material_raises_only_crypto_error(data: bytes) -> None:
    try:
        KeyMaterial.parse(data)
    except CryptoError:
        pass
