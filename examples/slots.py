"""Which of Redis Cluster's 16,384 hash slots a key belongs to.

The setup guide's snippet, ``crc16.crc16xmodem(key) % 16384``, hashes the whole key. Redis hashes
only the key's hash tag when it has one: the part between the first ``{`` and the first ``}``
after it, if that part is not empty. So ``{user:1001}:profile`` and ``{user:1001}:settings``
share a slot. ``slotgate slot KEY`` prints the same numbers as ``key_slot`` here.
"""

import binascii

SLOTS = 16384


def crc16(data: bytes) -> int:
    """CRC16/XMODEM, the checksum Redis Cluster uses (binascii's CRC-CCITT from 0)."""
    return binascii.crc_hqx(data, 0)


def hash_tag(key: bytes) -> bytes:
    """The part of `key` that Redis hashes: its hash tag if it has one, else the whole key."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key) -> int:
    """The slot of `key`, as CLUSTER KEYSLOT answers: str keys are UTF-8, as redis-py sends them."""
    if isinstance(key, str):
        key = key.encode()
    return crc16(hash_tag(key)) % SLOTS
