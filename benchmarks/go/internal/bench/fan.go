package bench

import "sync"

// Source sends 0 .. n-1 on a channel of capacity Cap, then closes it.
func Source(n uint64) <-chan uint64 {
	out := make(chan uint64, Cap)
	go func() {
		for i := uint64(0); i < n; i++ {
			out <- i
		}
		close(out)
	}()
	return out
}

// Workers maps what `in` brings with `work` on `workers` goroutines, into a channel of
// capacity Cap that is closed once every worker is done; items in any order.
func Workers[T any](in <-chan T, work func(T) T, workers int) <-chan T {
	out := make(chan T, Cap)
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for v := range in {
				out <- work(v)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// Drain sums (Sum) what `in` brings until it is closed.
func Drain(in <-chan uint64) uint64 {
	acc := uint64(0)
	for v := range in {
		acc = Sum(acc, v)
	}
	return acc
}

// FanOut is the program that fan_out_fan_in and heavy_tail share (benchmarks/compare's
// for_each_fan), and cost_sweep's par_map cells: a source goroutine -> `workers` worker
// goroutines mapping each item with `work` -> the caller as the sink.
func FanOut(n uint64, workers int, work func(uint64) uint64) uint64 {
	return Drain(Workers(Source(n), work, workers))
}

// FanMain is the main of a fan-out program: the family `program`, whose items number
// items(o), each mapped by work, summing to expected(n); GOMAXPROCS = W for each worker count.
func FanMain(program string, items func(Options) uint64, expected func(uint64) uint64,
	work func(uint64) uint64) {
	o := Parse()
	n := items(o)
	want := Once(func() uint64 { return expected(n) })
	var cases []Case
	for _, w := range o.WorkerCounts() {
		w := w
		name := program + "/go/" + CapName(Cap) + "_" + WorkersName(w)
		cases = append(cases, Case{Name: name, Workers: w, Run: func() Row {
			return Measure(name, n, want(), func() uint64 { return FanOut(n, w, work) })
		}})
	}
	Main(program, o, cases)
}
