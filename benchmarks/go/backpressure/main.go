// backpressure: a fast source goroutine feeds a slow sink (~2 µs per item) through a channel
// of capacity 64, an item per channel operation (peritem); reports the peak items in flight
// and the peak resident-set growth.
package main

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"

	"rillbench/internal/bench"
)

// meter counts items in flight as work.hpp's bench::flight_meter does.
type meter struct {
	produced uint64 // atomic; the source adds
	consumed uint64 // the sink only
	peak     uint64 // the sink only
}

func (m *meter) onProduced() { atomic.AddUint64(&m.produced, 1) }
func (m *meter) onConsumed() {
	if in := atomic.LoadUint64(&m.produced) - m.consumed; in > m.peak {
		m.peak = in
	}
	m.consumed++
}

func run(n uint64, m *meter) uint64 {
	c := make(chan bench.BPItem, bench.Cap)
	go func() {
		for i := uint64(0); i < n; i++ {
			item := bench.MakeBPItem(i)
			m.onProduced()
			c <- item
		}
		close(c)
	}()
	acc := uint64(0)
	for item := range c {
		m.onConsumed()
		acc = bench.Sum(acc, bench.SlowSink(&item))
	}
	return acc
}

func main() {
	o := bench.Parse()
	n := o.ItemsBackpressure()
	expected := bench.Once(func() uint64 { return bench.ExpectedBackpressure(n) })
	var cases []bench.Case
	for _, w := range o.EdgeWorkerCounts() {
		name := "backpressure/go/" + bench.Config(bench.LayoutName(1), bench.CapName(bench.Cap),
			bench.WorkersName(w))
		cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
			want := expected()
			runtime.GC()
			debug.FreeOSMemory()
			reset := bench.ResetHWM()
			base := bench.StatusKiB("VmRSS")
			var m meter
			row := bench.Measure(name, n, want, func() uint64 { return run(n, &m) })
			row["peak_in_flight"] = float64(m.peak)
			row["peak_rss_delta_kib"] = float64(bench.StatusKiB("VmHWM") - base)
			if !reset {
				row["rss_hwm_not_reset"] = 1.0
			}
			return row
		}})
	}
	bench.Main("backpressure", o, cases)
}
