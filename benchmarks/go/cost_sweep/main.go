// cost_sweep: the cells of benchmarks/compare/cost_sweep/ in idiomatic Go: a goroutine per
// stage linked by channels of capacity 64, a sync.WaitGroup fan-out of W goroutines for the
// par_map cells, the main goroutine as the sink; time.Sleep for the I/O variant (sleep1ms).
// GOMAXPROCS = min(W, NumCPU): the fan-out over 8 sleepers runs on the cores there are.
//
//	cost_sweep/go/cap64_linear3_<cost>_workers{1,NumCPU}      source -> 3 stages -> sum
//	cost_sweep/go/cap64_parmap_<cost>_workersW                source -> W workers -> sum
//	cost_sweep/go/cap64_few{8,40}_<cost1ms|sleep1ms>_workersW rounds of a fresh fan-out
//	cost_sweep/go/cap64_heavytail_workersNumCPU               fan-out, 1% of items ~1 ms
//	cost_sweep/go/cap64_trickle_{linear3,parmap}_workersNumCPU a 1 ms trickle; p50/p99
package main

import (
	"strconv"
	"time"

	"rillbench/internal/bench"
)

const capacity = bench.Cap

func stage(in <-chan uint64, f func(uint64) uint64) <-chan uint64 {
	out := make(chan uint64, capacity)
	go func() {
		for v := range in {
			out <- f(v)
		}
		close(out)
	}()
	return out
}

func linear3(n uint64, f func(uint64) uint64) uint64 {
	return bench.Drain(stage(stage(stage(bench.Source(n), f), f), f))
}

func parmap(n uint64, f func(uint64) uint64, workers int) uint64 {
	return bench.FanOut(n, workers, f)
}

func tstep(t bench.TrickleItem) bench.TrickleItem {
	t.V = bench.TrivialMap(t.V)
	return t
}

func trickle(n uint64, linear bool, workers int, rec *bench.LatencyRecorder) uint64 {
	src := make(chan bench.TrickleItem, capacity)
	go func() {
		for i := uint64(0); i < n; i++ {
			time.Sleep(bench.TricklePeriod)
			src <- bench.TrickleItem{V: i, Born: time.Now()}
		}
		close(src)
	}()
	tstage := func(in <-chan bench.TrickleItem, k int) <-chan bench.TrickleItem {
		return bench.Workers(in, tstep, k)
	}
	var last <-chan bench.TrickleItem
	if linear {
		last = tstage(tstage(tstage(src, 1), 1), 1)
	} else {
		last = tstage(src, workers)
	}
	acc := uint64(0)
	for t := range last {
		rec.Record(t)
		acc = bench.Sum(acc, t.V)
	}
	return acc
}

func main() {
	o := bench.Parse()
	want := func(w int) bool { return o.Workers == 0 || o.Workers == w }
	var cases []bench.Case
	add := func(cell string, w int, run func(name string) bench.Row) {
		if !want(w) {
			return
		}
		name := "cost_sweep/go/" + bench.CSConfig(cell, w, bench.CapName(capacity))
		cases = append(cases, bench.Case{Name: name, Workers: bench.CSRunWorkers(w),
			Run: func() bench.Row { return run(name) }})
	}
	for _, c := range bench.Costs {
		c := c
		n := o.CSItemsLinear3(c)
		expected := bench.Once(func() uint64 { return bench.CSExpectedLinear3(c, n) })
		for _, w := range bench.CSLinear3Workers() {
			add("linear3_"+c.Token(), w, func(name string) bench.Row {
				f := c.Stage()
				return bench.Measure(name, n, expected(), func() uint64 { return linear3(n, f) })
			})
		}
	}
	for _, c := range bench.Costs {
		c := c
		for _, w := range bench.CSParmapWorkers(c) {
			w, n := w, o.CSItemsParmap(c, w)
			add("parmap_"+c.Token(), w, func(name string) bench.Row {
				f := c.Stage()
				return bench.Measure(name, n, bench.CSExpectedParmap(c, n),
					func() uint64 { return parmap(n, f, w) })
			})
		}
	}
	for _, c := range bench.FewCosts {
		c := c
		for _, few := range bench.FewSizes {
			few, w, rounds := few, bench.CSFewWorkers(c), o.CSFewRounds(few, c)
			add("few"+strconv.Itoa(few)+"_"+c.Token(), w, func(name string) bench.Row {
				f := c.Stage()
				expected := bench.CSExpectedParmap(c, uint64(few)) * uint64(rounds)
				return bench.Measure(name, uint64(few*rounds), expected, func() uint64 {
					acc := uint64(0)
					for r := 0; r < rounds; r++ {
						acc += parmap(uint64(few), f, w)
					}
					return acc
				})
			})
		}
	}
	hw := bench.CSLinear3Workers()
	top := hw[len(hw)-1]
	{
		n := o.CSItemsHeavyTail()
		add("heavytail", top, func(name string) bench.Row {
			return bench.Measure(name, n, bench.CSExpectedHeavyTail(n),
				func() uint64 { return parmap(n, bench.HeavyTailMap, top) })
		})
	}
	for _, linear := range []bool{true, false} {
		linear, n := linear, o.CSItemsTrickle()
		cell := "trickle_parmap"
		if linear {
			cell = "trickle_linear3"
		}
		add(cell, top, func(name string) bench.Row {
			return bench.MeasureLatency(name, n, bench.CSExpectedTrickle(linear, n),
				func(rec *bench.LatencyRecorder) uint64 { return trickle(n, linear, top, rec) })
		})
	}
	bench.Main("cost_sweep", o, cases)
}
