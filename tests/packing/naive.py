"""Naive item-by-item reference packers the fast ones are checked against."""


def naive_bfd(lengths, capacity):
    """Sorted bin fills of textbook BFD: largest item first, into the fullest bin that fits."""
    room = []
    for s in sorted(lengths, reverse=True):
        best = -1
        for b, r in enumerate(room):
            if r >= s and (best < 0 or r < room[best]):
                best = b
        if best < 0:
            room.append(capacity - s)
        else:
            room[best] -= s
    return sorted(capacity - r for r in room)


def naive_ffd(lengths, capacity):
    room = []
    for s in sorted(lengths, reverse=True):
        for b, r in enumerate(room):
            if r >= s:
                room[b] -= s
                break
        else:
            room.append(capacity - s)
    return sorted(capacity - r for r in room)
