"""tf.train.Example protocol-buffer bytes of a user, written without TensorFlow.

Only the wire format of the features used here: a bytes list and int64 lists
of non-negative values. ``tf.io.parse_example`` reads what this writes.
"""

__all__ = ["user_example"]


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value):
    return _field(1, _field(1, value))  # Feature.bytes_list = 1; BytesList.value = 1


def _int64_feature(values):
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed))  # Feature.int64_list = 3; Int64List.value = 1 (packed)


def user_example(user_id, train, valid_target, test_target):
    """Serialized Example of a user (the features hybrid_tfrs.data.prepared describes).

    Args:
        user_id: raw user id (str).
        train: item indices (>= 1) of ``seq[:-2]``.
        valid_target, test_target: the indices of ``seq[-2]`` and ``seq[-1]``.
    """
    features = {
        "user_id": _bytes_feature(user_id.encode("utf-8")),
        "train": _int64_feature(train),
        "valid_target": _int64_feature([valid_target]),
        "test_target": _int64_feature([test_target]),
    }
    entries = b"".join(
        _field(1, _field(1, name.encode()) + _field(2, feature))  # map<string, Feature> entry
        for name, feature in features.items()
    )
    return _field(1, entries)  # Example.features = 1
