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


def naive_bfd_assignment(lengths, capacity):
    """Item -> bin of textbook BFD with the packers' exact rules: items by decreasing size (ties by
    index), bins numbered by opening, each item into the fullest bin that fits it, and between
    bins with equal room the one that reached that room first."""
    room, reached, assignment, clock = [], [], [0] * len(lengths), 0
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        s = lengths[i]
        best = -1
        for b, r in enumerate(room):
            if r >= s and (best < 0 or (r, reached[b]) < (room[best], reached[best])):
                best = b
        if best < 0:
            best = len(room)
            room.append(capacity)
            reached.append(0)
        room[best] -= s
        clock += 1
        reached[best] = clock
        assignment[i] = best
    return assignment
