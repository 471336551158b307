// linear_heavy: source -> W map goroutines (~1 µs of work per item) -> sum, channels of
// capacity 64, GOMAXPROCS = W; ordered (the sink reorders) and unordered.
package main

import (
	"runtime"
	"sync/atomic"

	"rillbench/internal/bench"
)

func run(n uint64, workers int, ordered bool) uint64 {
	in := make(chan uint64, bench.Cap)
	out := make(chan bench.SeqItem, bench.Cap)
	go func() {
		for i := uint64(0); i < n; i++ {
			in <- i
		}
		close(in)
	}()
	running := int32(workers)
	for w := 0; w < workers; w++ {
		go func() {
			for v := range in {
				out <- bench.SeqItem{Seq: v, Value: bench.HeavyMap(v)}
			}
			if atomic.AddInt32(&running, -1) == 0 {
				close(out)
			}
		}()
	}
	if ordered {
		r := bench.NewReorderer(bench.OrderedInit, bench.Ordered)
		for it := range out {
			r.Push(it)
		}
		return r.Acc
	}
	acc := uint64(0)
	for it := range out {
		acc = bench.Sum(acc, it.Value)
	}
	return acc
}

func main() {
	o := bench.Parse()
	n := o.ItemsHeavy()
	expected := map[bool]uint64{true: bench.ExpectedHeavy(n, true), false: bench.ExpectedHeavy(n, false)}
	var rows []bench.Row
	for _, w := range o.WorkerCounts() {
		runtime.GOMAXPROCS(w)
		for _, ordered := range []bool{true, false} {
			order := "_unordered"
			if ordered {
				order = "_ordered"
			}
			name := "linear_heavy/go/" + bench.CapName(bench.Cap) + "_" + bench.WorkersName(w) + order
			rows = append(rows, bench.Measure(name, n, expected[ordered], func() uint64 { return run(n, w, ordered) }))
		}
	}
	bench.Emit("linear_heavy", rows)
}
