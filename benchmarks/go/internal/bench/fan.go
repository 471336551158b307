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
	return workersCap(in, work, workers, Cap)
}

// workersCap is Workers with an output channel of capacity `capacity`.
func workersCap[T any](in <-chan T, work func(T) T, workers, capacity int) <-chan T {
	out := make(chan T, capacity)
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
// goroutines mapping each item with `work` -> the caller as the sink, an item per channel
// operation (the peritem layout).
func FanOut(n uint64, workers int, work func(uint64) uint64) uint64 {
	return Drain(Workers(Source(n), work, workers))
}

// BatchSource sends 0 .. n-1 in batches of `batch` items (the last one partial) on a channel
// of `slots` batches, then closes it.  Each batch is a fresh slice: its receiver owns it.
func BatchSource(n uint64, batch, slots int) <-chan []uint64 {
	out := make(chan []uint64, slots)
	go func() {
		b := make([]uint64, 0, batch)
		for i := uint64(0); i < n; i++ {
			b = append(b, i)
			if len(b) == batch {
				out <- b
				b = make([]uint64, 0, batch)
			}
		}
		if len(b) > 0 {
			out <- b
		}
		close(out)
	}()
	return out
}

// MapBatch maps each item of b with work, in place, and returns b: a stage owns the batch it
// received, so it hands the same slice on rather than allocating another.
func MapBatch(b []uint64, work func(uint64) uint64) []uint64 {
	for i, v := range b {
		b[i] = work(v)
	}
	return b
}

// DrainBatches sums (Sum) the items of the batches `in` brings until it is closed.
func DrainBatches(in <-chan []uint64) uint64 {
	acc := uint64(0)
	for b := range in {
		for _, v := range b {
			acc = Sum(acc, v)
		}
	}
	return acc
}

// FanOutBatched is FanOut hand-batched: the source sends batches of `batch` items through a
// channel of `slots` batches, each worker maps a whole batch (MapBatch) and sends it on as one
// batch through a channel of `slots` batches, the caller sums.
func FanOutBatched(n uint64, workers, batch, slots int, work func(uint64) uint64) uint64 {
	mapBatch := func(b []uint64) []uint64 { return MapBatch(b, work) }
	return DrainBatches(workersCap(BatchSource(n, batch, slots), mapBatch, workers, slots))
}

// FanMain is the main of a fan-out program: the family `program`, whose items number
// items(o), each mapped by work, summing to expected(n); GOMAXPROCS = W for each worker count.
// Each W has a peritem row (FanOut) and a batch row (FanOutBatched, batches of at most
// FanBatch items in rill's link shape for capacity Cap).
func FanMain(program string, items func(Options) uint64, expected func(uint64) uint64,
	work func(uint64) uint64) {
	o := Parse()
	n := items(o)
	want := Once(func() uint64 { return expected(n) })
	batch, slots := LinkBatch(Cap, FanBatch), LinkSlots(Cap, FanBatch)
	var cases []Case
	add := func(layout string, w int, run func() uint64) {
		name := program + "/go/" + Config(layout, CapName(Cap), WorkersName(w))
		cases = append(cases, Case{Name: name, Workers: w, Run: func() Row {
			return Measure(name, n, want(), run)
		}})
	}
	for _, w := range o.WorkerCounts() {
		w := w
		add(LayoutName(1), w, func() uint64 { return FanOut(n, w, work) })
		add(LayoutName(batch), w, func() uint64 { return FanOutBatched(n, w, batch, slots, work) })
	}
	Main(program, o, cases)
}
