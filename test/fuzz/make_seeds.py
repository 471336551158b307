#!/usr/bin/env python3
# test/fuzz/make_seeds.py DIR: writes the hand-made seed inputs of the channel fuzz target
# (the layout is described at the top of chan_fuzz.cpp). The corpus in corpus/ holds them
# plus what libFuzzer found (scripts/fuzz --merge).
import os, sys
out = sys.argv[1]
K = dict(send=0, recv=1, try_send=2, try_recv=3, close=4, select=5, yield_=6)
def op(kind, ch=0, cases=None, default=False):
    b = [K[kind], ch]
    if kind == 'select':
        n = len(cases)
        b.append((n - 1) + 4 * (1 if default else 0))
        for send, c in cases:
            b.append((1 if send else 0) | (c << 1))
    return b
def scen(workers, caps, fibers, main_yields):
    b = [1 if workers == 2 else 0, len(caps) - 1] + caps + [len(fibers) - 1, main_yields]
    for prog in fibers:
        b.append(len(prog))
        for o in prog:
            b += o
    return bytes(b)
S = []
for w in (1, 2):
    # buffered, a sender parks on a full channel and is refilled by receives (keeps FIFO)
    S.append((f'full_buffer_refill_w{w}', scen(w, [1], [[op('send')] * 4, [op('recv')] * 4], 40)))
    S.append((f'full_buffer_partial_drain_w{w}', scen(w, [1], [[op('send')] * 3, [op('recv')]], 20)))
    S.append((f'full_buffer_two_senders_w{w}', scen(w, [2], [[op('send')] * 4, [op('send')] * 4, [op('yield_')] * 3 + [op('recv')] * 8], 63)))
    # unbuffered ping-pong between two channels
    S.append((f'ping_pong_w{w}', scen(w, [0, 0], [[op('send', 0), op('recv', 1)] * 5, [op('recv', 0), op('send', 1)] * 5], 50)))
    # close while senders and receivers are parked
    S.append((f'close_wakes_all_w{w}', scen(w, [0, 1], [[op('send', 0)] * 2, [op('recv', 1)] * 2, [op('yield_'), op('close', 0), op('close', 1), op('close', 1)]], 10)))
    # selects on both sides, with defaults and duplicated channels
    S.append((f'select_both_sides_w{w}', scen(w, [0, 2], [
        [op('select', cases=[(True, 0), (True, 1), (True, 0)])] * 4,
        [op('select', cases=[(False, 0), (False, 1), (False, 0)])] * 4,
        [op('select', cases=[(False, 1), (True, 1)], default=True)] * 3], 60)))
    S.append((f'try_ops_w{w}', scen(w, [1, 0], [[op('try_send', 0), op('try_send', 0), op('try_recv', 1)] * 3, [op('try_recv', 0), op('yield_'), op('try_send', 1)] * 3], 20)))
    S.append((f'select_self_w{w}', scen(w, [0], [[op('select', cases=[(True, 0), (False, 0)])] * 3, [op('select', cases=[(True, 0), (False, 0)])] * 3], 30)))
    S.append((f'range_until_close_w{w}', scen(w, [3], [[op('send')] * 6 + [op('close')], [op('recv')] * 7, [op('recv')] * 7], 63)))
os.makedirs(out, exist_ok=True)
for name, data in S:
    open(os.path.join(out, name), 'wb').write(data)
print(len(S), 'seeds')
