// fan_out_fan_in: 1 source -> W worker goroutines (uneven cost, 1 µs on average) -> 1 sink,
// channels of capacity 64, GOMAXPROCS = W, items in any order.
package main

import (
	"sync"

	"rillbench/internal/bench"
)

func run(n uint64, workers int) uint64 {
	in := make(chan uint64, bench.Cap)
	out := make(chan uint64, bench.Cap)
	go func() {
		for i := uint64(0); i < n; i++ {
			in <- i
		}
		close(in)
	}()
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for v := range in {
				out <- bench.FanMap(v)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	acc := uint64(0)
	for v := range out {
		acc = bench.Sum(acc, v)
	}
	return acc
}

func main() {
	o := bench.Parse()
	n := o.ItemsFan()
	expected := bench.Once(func() uint64 { return bench.ExpectedFan(n) })
	var cases []bench.Case
	for _, w := range o.WorkerCounts() {
		w := w
		name := "fan_out_fan_in/go/" + bench.CapName(bench.Cap) + "_" + bench.WorkersName(w)
		cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
			return bench.Measure(name, n, expected(), func() uint64 { return run(n, w) })
		}})
	}
	bench.Main("fan_out_fan_in", o, cases)
}
