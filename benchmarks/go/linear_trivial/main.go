// linear_trivial: source -> map(v*2+1) -> sum in three layouts (work.hpp's "Layouts"):
//   - peritem: a goroutine per stage (the sink is the caller) linked by channels of capacity
//     0, 64 and 1024, an item per channel operation (rill's hand-written twin:
//     linear_trivial/rill_chan);
//   - batch<B>: the same goroutines linked by channels of batches (chan []uint64) in rill's
//     link shape for capacity 64 and 1024 (bench.LinkBatch, bench.LinkSlots);
//   - fused: the caller runs the three stages as one loop, no goroutine and no channel.
//
// GOMAXPROCS 1, 2, 4, ..., NumCPU; fused at 1.  See benchmarks/compare/common/work.hpp.
package main

import "rillbench/internal/bench"

// maxBatch is the largest batch of rill's links (work.hpp's link_batch default).
const maxBatch = 64

func runPeritem(n uint64, capacity int) uint64 {
	c1 := make(chan uint64, capacity)
	c2 := make(chan uint64, capacity)
	go func() {
		for i := uint64(0); i < n; i++ {
			c1 <- i
		}
		close(c1)
	}()
	go func() {
		for v := range c1 {
			c2 <- bench.TrivialMap(v)
		}
		close(c2)
	}()
	acc := uint64(0)
	for v := range c2 {
		acc = bench.Sum(acc, v)
	}
	return acc
}

// runBatched: the source sends a fresh slice of up to `batch` items at a time (the last one
// partial), the map stage maps each batch in place and hands the same slice on, the caller
// sums; both channels hold `slots` batches.
func runBatched(n uint64, batch, slots int) uint64 {
	c1 := bench.BatchSource(n, batch, slots)
	c2 := make(chan []uint64, slots)
	go func() {
		for b := range c1 {
			for i, v := range b {
				b[i] = bench.TrivialMap(v)
			}
			c2 <- b
		}
		close(c2)
	}()
	return bench.DrainBatches(c2)
}

// runFused is the plain loop, as the C++ sequential row; its result goes back through
// bench.Measure, which checks it.
func runFused(n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		acc = bench.Sum(acc, bench.TrivialMap(i))
	}
	return acc
}

func main() {
	o := bench.Parse()
	var cases []bench.Case
	add := func(config string, w int, n uint64, run func() uint64) {
		name := "linear_trivial/go/" + config
		cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
			return bench.Measure(name, n, bench.ExpectedTrivial(n), run)
		}})
	}
	// fused uses one thread of control: it runs in the sweep and at -workers 1 only.
	if o.Workers <= 1 {
		n := o.ItemsTrivial(1024)
		add("fused", 1, n, func() uint64 { return runFused(n) })
	}
	for _, w := range o.WorkerCounts() {
		for _, c := range bench.TrivialCaps {
			c, n := c, o.ItemsTrivial(c)
			add(bench.Config(bench.LayoutName(1), bench.CapName(c), bench.WorkersName(w)), w, n,
				func() uint64 { return runPeritem(n, c) })
		}
		for _, c := range bench.BatchedCaps {
			b, s, n := bench.LinkBatch(c, maxBatch), bench.LinkSlots(c, maxBatch), o.ItemsTrivial(c)
			add(bench.Config(bench.LayoutName(b), bench.CapName(c), bench.WorkersName(w)), w, n,
				func() uint64 { return runBatched(n, b, s) })
		}
	}
	bench.Main("linear_trivial", o, cases)
}
