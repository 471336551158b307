// micro: the costs of Go's primitives that rill's micro benchmarks (benchmarks/micro/) have
// counterparts for.  Each figure is in ns_per_item (per goroutine, switch, round trip, item
// or select) except rss_per_parked_*, whose figure is bytes_per_goroutine.  Every name ends
// in _workersW: GOMAXPROCS = W.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"rillbench/internal/bench"
)

// timed runs f once and returns a row with ns_per_item = elapsed / ops.
func timed(name string, ops uint64, f func()) bench.Row {
	t0 := time.Now()
	f()
	elapsed := time.Since(t0)
	row := bench.NewRow(name, float64(elapsed.Nanoseconds()), 0)
	row["ns_per_item"] = float64(elapsed.Nanoseconds()) / float64(ops)
	row["items_per_second"] = float64(ops) / elapsed.Seconds()
	return row
}

// spawnJoin: start n goroutines that return at once, wait for all (sync.WaitGroup).
func spawnJoin(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go wg.Done()
	}
	wg.Wait()
}

// spawnJoinBatches: n goroutines in batches of 1000, each batch joined before the next
// starts (runtime/spawn_join's program on the rill side).
func spawnJoinBatches(n int) {
	var wg sync.WaitGroup
	for done := 0; done < n; done += 1000 {
		wg.Add(1000)
		for i := 0; i < 1000; i++ {
			go wg.Done()
		}
		wg.Wait()
	}
}

// yieldPair: two goroutines call runtime.Gosched() n times each.
func yieldPair(n int) {
	var wg sync.WaitGroup
	wg.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
}

// parked measures n goroutines parked on a channel receive: resident-set growth per
// goroutine once all are parked, then the time to wake them all (close) and join them.
// The collector is off meanwhile: with a million stacks to scan it would dominate the time.
func parked(n int, rssName, wakeName string) (rss, wake bench.Row) {
	runtime.GC()
	debug.FreeOSMemory()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := bench.StatusKiB("VmRSS")
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			ready.Done()
			<-start
			done.Done()
		}()
	}
	ready.Wait()
	spawn := time.Since(t0)
	time.Sleep(10 * time.Millisecond) // let the last ones reach the receive
	after := bench.StatusKiB("VmRSS")
	rss = bench.NewRow(rssName, float64(spawn.Nanoseconds()), 0)
	rss["bytes_per_goroutine"] = float64(after-before) * 1024 / float64(n)
	rss["ns_per_item"] = float64(spawn.Nanoseconds()) / float64(n) // spawn until parked
	wake = timed(wakeName, uint64(n), func() {
		close(start)
		done.Wait()
	})
	return rss, wake
}

func countName(n int) string {
	if n >= 1_000_000 && n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// pingPong: n round trips over two unbuffered channels.
func pingPong(n int) {
	ping := make(chan int)
	pong := make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
		close(pong)
	}()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
}

// spsc: one producer sends n items through a channel of capacity 1024 to one consumer.
func spsc(n int) {
	c := make(chan int, 1024)
	go func() {
		for i := 0; i < n; i++ {
			c <- i
		}
		close(c)
	}()
	sum := 0
	for v := range c {
		sum += v
	}
	if sum != n*(n-1)/2 {
		fmt.Fprintln(os.Stderr, "spsc: wrong sum")
		os.Exit(1)
	}
}

// pipeline3: the seed's pipeline by hand: source -> map -> sink, three goroutines, each
// ranging over a channel of capacity c (rill: benchmarks/micro/pipeline_bench.cpp). heavy:
// the map does ~1 us of work (bench.Work, calibrated) instead of v*2+1.
func pipeline3(c, n int, heavy bool) {
	numbers := make(chan int64, c)
	results := make(chan int64, c)
	total := make(chan int64)
	iters := bench.CalibratedIters()
	go func() {
		for i := 0; i < n; i++ {
			numbers <- int64(i)
		}
		close(numbers)
	}()
	go func() {
		for v := range numbers {
			if heavy {
				results <- int64(bench.Work(uint64(v), iters))
			} else {
				results <- v*2 + 1
			}
		}
		close(results)
	}()
	go func() {
		var sum int64
		for v := range results {
			sum += v
		}
		total <- sum
	}()
	sum := <-total
	if !heavy && sum != int64(n)*int64(n) {
		fmt.Fprintln(os.Stderr, "pipeline3: wrong sum")
		os.Exit(1)
	}
}

var sink int

// selectDefault: n selects over two empty channels with a default case.
func selectDefault(n int) {
	a := make(chan int)
	b := make(chan int)
	for i := 0; i < n; i++ {
		select {
		case v := <-a:
			sink += v
		case v := <-b:
			sink += v
		default:
			sink++
		}
	}
}

// selectReadyClosed: n selects where one case (a closed channel) is always ready.
func selectReadyClosed(n int) {
	a := make(chan int)
	close(a)
	b := make(chan int)
	for i := 0; i < n; i++ {
		select {
		case v := <-a:
			sink += v + 1
		case v := <-b:
			sink += v
		}
	}
}

// selectReadyBuffered: n times, send into a buffered channel, then select over it and an
// empty channel (the send is included).
func selectReadyBuffered(n int) {
	a := make(chan int, 1)
	b := make(chan int)
	for i := 0; i < n; i++ {
		a <- i
		select {
		case v := <-a:
			sink += v
		case v := <-b:
			sink += v
		}
	}
}

func main() {
	o := bench.Parse()
	scale := 1
	if o.Quick {
		scale = 10
	}
	var cases []bench.Case
	for _, w := range o.EdgeWorkerCounts() {
		suffix := "_" + bench.WorkersName(w)
		// addWarm: a case whose warm-up (if any) runs before its timed region.
		addWarm := func(what string, ops int, warm func(), f func()) {
			name := "micro/go/" + what + suffix
			cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
				if warm != nil {
					warm()
				}
				return timed(name, uint64(ops), f)
			}})
		}
		add := func(what string, ops int, f func()) { addWarm(what, ops, nil, f) }
		// Batches of 1000 with a join per batch, as rill's runtime/spawn_join; the warm-up
		// (the same program, a tenth of it) is not timed.
		spawnN := 1_000_000 / scale
		addWarm("spawn_join", spawnN, func() { spawnJoinBatches(spawnN / 10) },
			func() { spawnJoinBatches(spawnN) })
		// All at once, without a warm-up: runtime/spawn_join_fresh's program (rill runs it
		// on a fresh runtime; this process may reuse the stacks of earlier cases).
		for _, n := range []int{100_000 / scale, 1_000_000 / scale} {
			n := n
			add("spawn_join_at_once_"+countName(n), n, func() { spawnJoin(n) })
		}
		yieldN := 1_000_000 / scale
		add("gosched_yield_pair", 2*yieldN, func() { yieldPair(yieldN) })
		pingN := 1_000_000 / scale
		add("chan_unbuffered_pingpong", pingN, func() { pingPong(pingN) })
		spscN := 2_000_000 / scale
		add("chan_buffered1024_spsc", spscN, func() { spsc(spscN) })
		selN := 2_000_000 / scale
		add("select_default_2empty", selN, func() { selectDefault(selN) })
		add("select_ready_closed", selN, func() { selectReadyClosed(selN) })
		add("select_ready_buffered", selN, func() { selectReadyBuffered(selN) })
		// A million parked goroutines (2-3 GB) only at the largest GOMAXPROCS, and not quick.
		counts := []int{100_000}
		if !o.Quick && w == runtime.NumCPU() {
			counts = append(counts, 1_000_000)
		}
		for _, n := range counts {
			n := n
			rssName := "micro/go/rss_per_parked_" + countName(n) + suffix
			wakeName := "micro/go/wake_join_parked_" + countName(n) + suffix
			var wake bench.Row
			cases = append(cases, bench.Case{Name: rssName, Workers: w, Run: func() bench.Row {
				var rss bench.Row
				rss, wake = parked(n, rssName, wakeName)
				return rss
			}})
			// Waking needs the goroutines the previous case parked: it runs (and is filtered)
			// with it, and reports what that case measured.
			cases = append(cases, bench.Case{Name: wakeName, Workers: w, Run: func() bench.Row {
				if wake == nil {
					_, wake = parked(n, rssName, wakeName)
				}
				return wake
			}})
		}
	}
	// The hand-written pipeline over every worker count (1, 2, 4, ..., NumCPU), as
	// benchmarks/micro/pipeline_bench.cpp runs it.
	for _, w := range o.WorkerCounts() {
		w := w
		add := func(what string, ops int, f func()) {
			name := "micro/go/" + what + "_" + bench.WorkersName(w)
			cases = append(cases, bench.Case{Name: name, Workers: w, Run: func() bench.Row {
				return timed(name, uint64(ops), f)
			}})
		}
		for _, c := range []int{0, 64, 1024} {
			c := c
			n := 2_000_000 / scale
			if c == 0 {
				n /= 10
			}
			add(fmt.Sprintf("chan_pipeline3_cap%d", c), n, func() { pipeline3(c, n, false) })
		}
		heavyN := 20_000 / scale
		add("chan_pipeline3_work1us_cap64", heavyN, func() { pipeline3(64, heavyN, true) })
	}
	bench.Main("micro", o, cases)
}
