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


def naive_buffered(lengths, capacity, buffer_tokens, min_fill):
    """``BufferedPacker``'s rules item by item: each item enters the buffer; when the buffer holds
    ``buffer_tokens`` tokens, BFD it, emit the bins filled to ``min_fill`` and carry the items of
    the least-filled others (fewest tokens first, ties by bin) while their total stays within
    ``buffer_tokens // 2``; at the end pack and emit everything. Returns the emitted bins as
    lists of item ids, increasing inside each bin, in emission order."""
    out, buf = [], []

    def round_(final):
        lens = [lengths[i] for i in buf]
        a = naive_bfd_assignment(lens, capacity)
        n_bins = max(a) + 1 if a else 0
        fills = [0] * n_bins
        for j, b in enumerate(a):
            fills[b] += lens[j]
        carried, total = set(), 0
        if not final:
            low = sorted((f, b) for b, f in enumerate(fills) if f < min_fill * capacity)
            for f, b in low:
                if total + f > buffer_tokens // 2:
                    break
                total += f
                carried.add(b)
        for b in range(n_bins):
            if b not in carried:
                out.append([buf[j] for j in range(len(buf)) if a[j] == b])
        buf[:] = [buf[j] for j in range(len(buf)) if a[j] in carried]

    for i in range(len(lengths)):
        buf.append(i)
        if sum(lengths[j] for j in buf) >= buffer_tokens:
            round_(final=False)
    if buf:
        round_(final=True)
    return out
