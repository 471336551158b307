// linear_heavy: source -> W map goroutines (~1 µs of work per item) -> sum, channels of
// capacity 64, an item per channel operation (peritem), GOMAXPROCS = W; ordered (the sink
// reorders) and unordered.
package main

import (
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
	expected := map[bool]func() uint64{
		true:  bench.Once(func() uint64 { return bench.ExpectedHeavy(n, true) }),
		false: bench.Once(func() uint64 { return bench.ExpectedHeavy(n, false) }),
	}
	var cases []bench.Case
	for _, w := range o.WorkerCounts() {
		for _, ordered := range []bool{true, false} {
			w, ordered := w, ordered
			order := "_unordered"
			if ordered {
				order = "_ordered"
			}
			name := "linear_heavy/go/" + bench.Config(bench.LayoutName(1), bench.CapName(bench.Cap),
				bench.WorkersName(w)) + order
			cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
				return bench.Measure(name, n, expected[ordered](), func() uint64 { return run(n, w, ordered) })
			}})
		}
	}
	bench.Main("linear_heavy", o, cases)
}
