// linear_trivial: source -> map(v*2+1) -> sum, a goroutine per stage linked by channels of
// capacity 0, 64 and 1024, with GOMAXPROCS 1, 2, 4, ..., NumCPU (rill's hand-written twin:
// linear_trivial/rill_chan).  See benchmarks/compare/common/work.hpp.
package main

import "rillbench/internal/bench"

func run(n uint64, capacity int) uint64 {
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

func main() {
	o := bench.Parse()
	var cases []bench.Case
	for _, w := range o.WorkerCounts() {
		for _, c := range bench.TrivialCaps {
			w, c, n := w, c, o.ItemsTrivial(c)
			name := "linear_trivial/go/" + bench.CapName(c) + "_" + bench.WorkersName(w)
			cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
				return bench.Measure(name, n, bench.ExpectedTrivial(n), func() uint64 { return run(n, c) })
			}})
		}
	}
	bench.Main("linear_trivial", o, cases)
}
