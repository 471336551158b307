// Package bench is what the Go side of rill's side-by-side benchmarks shares: the work loop
// and item counts of benchmarks/compare/common/work.hpp (same constants, same calibration
// target), flags, timing, and output in Google Benchmark's JSON format, so that scripts/bench
// merges Go's rows with the C++ ones.
package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options are the flags every program takes.
type Options struct {
	Workers int            // -workers N: run with GOMAXPROCS=N only; 0 (or empty) sweeps the worker counts
	Quick   bool           // -quick (or RILL_BENCH_QUICK=1): small item counts
	List    bool           // -list: print the names, run nothing
	Filter  *regexp.Regexp // -filter RE: run only the names RE matches
}

// Parse parses the flags of a benchmark program.
func Parse() Options {
	var o Options
	// An empty -workers is 0: scripts/bench passes its workers token, empty for the rows that
	// name none (linear_trivial's fused row).
	flag.Func("workers", "GOMAXPROCS (and worker goroutines); 0 or empty: sweep 1, 2, 4, ..., NumCPU",
		func(s string) error {
			if s == "" {
				o.Workers = 0
				return nil
			}
			w, err := strconv.Atoi(s)
			if err != nil || w < 0 {
				return fmt.Errorf("want a worker count, not %q", s)
			}
			o.Workers = w
			return nil
		})
	flag.BoolVar(&o.Quick, "quick", false, "small item counts (also RILL_BENCH_QUICK=1)")
	flag.BoolVar(&o.List, "list", false, "print the benchmark names and exit")
	filter := flag.String("filter", "", "run only the benchmarks whose name matches this regular expression")
	calibrate := flag.Bool("calibrate", false, "print the calibrated work-loop iteration count and exit")
	flag.Parse()
	if os.Getenv("RILL_BENCH_QUICK") == "1" {
		o.Quick = true
	}
	if *filter != "" {
		re, err := regexp.Compile(*filter)
		if err != nil {
			fmt.Fprintln(os.Stderr, "-filter:", err)
			os.Exit(2)
		}
		o.Filter = re
	}
	if *calibrate {
		fmt.Println(CalibratedIters())
		os.Exit(0)
	}
	return o
}

// Case is one benchmark: run it with GOMAXPROCS = Workers.
type Case struct {
	Name    string
	Workers int
	Run     func() Row
}

// Main lists the cases (-list) or runs those the filter selects, in order, and prints their
// rows as Google Benchmark JSON.
func Main(program string, o Options, cases []Case) {
	if o.List {
		for _, c := range cases {
			fmt.Println(c.Name)
		}
		return
	}
	rows := []Row{}
	for _, c := range cases {
		if o.Filter != nil && !o.Filter.MatchString(c.Name) {
			continue
		}
		runtime.GOMAXPROCS(c.Workers)
		rows = append(rows, c.Run())
	}
	Emit(program, rows)
}

// Once returns f's result, computing it on the first call only.
func Once(f func() uint64) func() uint64 {
	var done bool
	var v uint64
	return func() uint64 {
		if !done {
			v, done = f(), true
		}
		return v
	}
}

// WorkerCounts returns 1, 2, 4, ... and NumCPU, or just -workers when it was given.
func (o Options) WorkerCounts() []int {
	if o.Workers > 0 {
		return []int{o.Workers}
	}
	hw := runtime.NumCPU()
	var out []int
	for w := 1; w < hw; w *= 2 {
		out = append(out, w)
	}
	return append(out, hw)
}

// EdgeWorkerCounts returns 1 and NumCPU, or just -workers when it was given.
func (o Options) EdgeWorkerCounts() []int {
	if o.Workers > 0 {
		return []int{o.Workers}
	}
	hw := runtime.NumCPU()
	if hw == 1 {
		return []int{1}
	}
	return []int{1, hw}
}

// Cap is the channel capacity of every workload but linear_trivial, which uses TrivialCaps.
const Cap = 64

// TrivialCaps are linear_trivial's channel capacities.
var TrivialCaps = []int{0, 64, 1024}

// Item counts, as in work.hpp.
func (o Options) ItemsTrivial(cap int) uint64 {
	n := uint64(10_000_000)
	if o.Quick {
		n = 500_000
	}
	if cap == 0 {
		return n / 100
	}
	return n
}
func (o Options) ItemsHeavy() uint64        { return o.pick(20_000, 200_000) }
func (o Options) ItemsFan() uint64          { return o.pick(20_000, 200_000) }
func (o Options) ItemsBackpressure() uint64 { return o.pick(20_000, 100_000) }
func (o Options) pick(quick, full uint64) uint64 {
	if o.Quick {
		return quick
	}
	return full
}

// Work is the CPU work loop, work.hpp's bench::work: an LCG step and an xorshift per
// iteration, one dependent chain.
func Work(v, iters uint64) uint64 {
	for i := uint64(0); i < iters; i++ {
		v = v*6364136223846793005 + 1442695040888963407
		v ^= v >> 29
	}
	return v
}

var calibrated uint64

// CalibratedIters returns the iteration count of Work that takes about 1 µs here, measured
// once (min of 9 timed runs) and printed to stderr.  RILL_BENCH_GO_WORK_ITERS overrides it.
func CalibratedIters() uint64 {
	if calibrated != 0 {
		return calibrated
	}
	if e := os.Getenv("RILL_BENCH_GO_WORK_ITERS"); e != "" {
		if v, err := strconv.ParseUint(e, 10, 64); err == nil && v > 0 {
			fmt.Fprintf(os.Stderr, "go bench: work loop pinned to %d iterations per ~1 us item\n", v)
			calibrated = v
			return v
		}
	}
	const probe = 200_000
	sink := Work(1, probe)
	best := math.MaxFloat64
	for trial := uint64(0); trial < 9; trial++ {
		t0 := time.Now()
		sink ^= Work(trial+7, probe)
		best = math.Min(best, float64(time.Since(t0).Nanoseconds()))
	}
	perIter := best / probe
	calibrated = uint64(math.Max(1, math.Round(1000/perIter)))
	fmt.Fprintf(os.Stderr, "go bench: work loop %.3f ns/iteration; %d iterations per ~1 us item (%d)\n",
		perIter, calibrated, sink&1)
	return calibrated
}

// The maps and sinks of work.hpp.
func TrivialMap(v uint64) uint64 { return v*2 + 1 }
func HeavyMap(v uint64) uint64   { return Work(v, CalibratedIters()) }

// FanIters is item i's uneven cost: base * (1 + (i*2654435761 % 7)), base = iters / 4.
func FanIters(i uint64) uint64 {
	base := CalibratedIters() / 4
	if base == 0 {
		base = 1
	}
	return base * (1 + (i*2654435761)%7)
}
func FanMap(v uint64) uint64 { return Work(v, FanIters(v)) }

const OrderedInit uint64 = 14695981039346656037

func Sum(acc, v uint64) uint64     { return acc + v }
func Ordered(acc, v uint64) uint64 { return (acc ^ v) * 1099511628211 }

// BPItem is backpressure's 1 KiB item.
type BPItem struct {
	Seq uint64
	Pad [127]uint64
}

func MakeBPItem(i uint64) BPItem {
	var item BPItem
	item.Seq = i
	item.Pad[0] = i
	return item
}

// SlowSink is backpressure's sink work, about 2 µs per item.
func SlowSink(item *BPItem) uint64 {
	return Work(item.Seq^item.Pad[0]^item.Pad[126], 2*CalibratedIters())
}

// SeqItem is a mapped value with its source sequence number (ordered fan-out).
type SeqItem struct {
	Seq, Value uint64
}

// Reorderer folds values in sequence order 0, 1, 2, ..., holding early ones.
type Reorderer struct {
	Acc     uint64
	next    uint64
	early   map[uint64]uint64
	combine func(acc, v uint64) uint64
}

func NewReorderer(init uint64, combine func(acc, v uint64) uint64) *Reorderer {
	return &Reorderer{Acc: init, early: map[uint64]uint64{}, combine: combine}
}

func (r *Reorderer) Push(it SeqItem) {
	if it.Seq != r.next {
		r.early[it.Seq] = it.Value
		return
	}
	r.Acc = r.combine(r.Acc, it.Value)
	r.next++
	for {
		v, ok := r.early[r.next]
		if !ok {
			return
		}
		delete(r.early, r.next)
		r.Acc = r.combine(r.Acc, v)
		r.next++
	}
}

// Expected results.
func ExpectedTrivial(n uint64) uint64 { return n * n }
func ExpectedHeavy(n uint64, ordered bool) uint64 {
	acc := uint64(0)
	if ordered {
		acc = OrderedInit
	}
	for i := uint64(0); i < n; i++ {
		if ordered {
			acc = Ordered(acc, HeavyMap(i))
		} else {
			acc = Sum(acc, HeavyMap(i))
		}
	}
	return acc
}
func ExpectedFan(n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		acc = Sum(acc, FanMap(i))
	}
	return acc
}
func ExpectedBackpressure(n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		item := MakeBPItem(i)
		acc = Sum(acc, SlowSink(&item))
	}
	return acc
}

// Row is one result in Google Benchmark's JSON shape.
type Row map[string]interface{}

func cpuNanos() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// A run shorter than warmUpBelow is a warm-up, and then as many runs are timed as fill
// warmUpBelow, as the C++ harness does (benchmarks/compare/common/work.hpp): in so short a
// run, the first touches of a fresh process are a large share of the time, and one run held
// up by the machine would be the whole sample.
const warmUpBelow = 20 * time.Millisecond

// Measure runs run() once (when short: a warm-up, then runs until they span warmUpBelow),
// which processes items items and returns the sink's result, and returns its row: real and
// CPU time in ms and items_per_second, ns_per_item, all per run (the mean of the timed
// runs); an error row when a result is not expected.
func Measure(name string, items, expected uint64, run func() uint64) Row {
	return measure(name, items, expected, run, true)
}

// measure is Measure; repeat false times a short run once after its warm-up.
func measure(name string, items, expected uint64, run func() uint64, repeat bool) Row {
	c0 := cpuNanos()
	t0 := time.Now()
	got := run()
	elapsed := time.Since(t0)
	cpu := cpuNanos() - c0
	runs := int64(1)
	if elapsed < warmUpBelow && got == expected {
		elapsed, cpu, runs = 0, 0, 0
		for {
			c0 = cpuNanos()
			t0 = time.Now()
			got = run()
			elapsed += time.Since(t0)
			cpu += cpuNanos() - c0
			runs++
			if !repeat || got != expected || elapsed >= warmUpBelow {
				break
			}
		}
	}
	elapsed /= time.Duration(runs)
	cpu /= runs
	row := NewRow(name, float64(elapsed.Nanoseconds()), float64(cpu))
	row["items_per_second"] = float64(items) / elapsed.Seconds()
	row["ns_per_item"] = float64(elapsed.Nanoseconds()) / float64(items)
	if got != expected {
		row["error_occurred"] = true
		row["error_message"] = "wrong result: the pipeline lost, duplicated or reordered items"
	}
	return row
}

// NewRow returns a row with real and CPU time given in nanoseconds.
func NewRow(name string, realNs, cpuNs float64) Row {
	return Row{
		"name": name, "run_name": name, "run_type": "iteration", "repetitions": 1,
		"repetition_index": 0, "threads": 1, "iterations": 1,
		"real_time": realNs / 1e6, "cpu_time": cpuNs / 1e6, "time_unit": "ms",
	}
}

// StatusKiB reads a "Vm...:  N kB" line of /proc/self/status; -1 if absent.
func StatusKiB(key string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line[len(key)+1:])
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return -1
}

// ResetHWM resets VmHWM to the current RSS (/proc/self/clear_refs); false if it could not.
func ResetHWM() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// Emit prints the rows as Google Benchmark JSON on stdout.
func Emit(program string, rows []Row) {
	host, _ := os.Hostname()
	out := map[string]interface{}{
		"context": map[string]interface{}{
			"date":                time.Now().Format(time.RFC3339),
			"host_name":           host,
			"executable":          program,
			"num_cpus":            runtime.NumCPU(),
			"go_version":          runtime.Version(),
			"work_iters_per_item": strconv.FormatUint(CalibratedIters(), 10),
			"library_build_type":  "release",
		},
		"benchmarks": rows,
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// WorkersName and CapName spell the canonical config tokens; Config joins tokens into a
// row's config.
func WorkersName(w int) string       { return "workers" + strconv.Itoa(w) }
func CapName(c int) string           { return "cap" + strconv.Itoa(c) }
func Config(tokens ...string) string { return strings.Join(tokens, "_") }

// Layouts: work.hpp's "Layouts" (same words, same shapes). LinkBatch and LinkSlots give a
// hand-batched link of capacity c items rill's own link shape: batches of LinkBatch(c, max)
// items through a channel of LinkSlots(c, max) batches. LayoutName(1) is "peritem".
func LinkBatch(c, max int) int {
	b := c / 3
	if b < 1 {
		b = 1
	}
	if b > max {
		b = max
	}
	return b
}

func LinkSlots(c, max int) int {
	b := LinkBatch(c, max)
	if c >= 2*b {
		return (c - 2*b + 1) / b
	}
	return 0
}

func LayoutName(batch int) string {
	if batch == 1 {
		return "peritem"
	}
	return "batch" + strconv.Itoa(batch)
}

// BatchedCaps are linear_trivial's capacities with hand-batched rows; FanBatch is
// par_map's largest hand-out, the fan workloads' batch.
var BatchedCaps = []int{64, 1024}

const FanBatch = 16

// ---- cost_sweep -------------------------------------------------------------------------------
// The cells of benchmarks/compare/cost_sweep/ (work.hpp's cost_sweep section, same constants):
// an item cost of ~1 ns (v*2+1), 100 ns, 10 µs, 1 ms of CPU, or a 1 ms sleep, through 3
// linear stages or a fan-out over W; few items; heavy-tailed costs; a trickle source.

// Cost is a cell's cost per stage and item.
type Cost int

const (
	Cost1ns Cost = iota
	Cost100ns
	Cost10us
	Cost1ms
	Sleep1ms
)

// Costs are the sweep's costs, in order; FewCosts those of the few-items cells.
var (
	Costs    = []Cost{Cost1ns, Cost100ns, Cost10us, Cost1ms, Sleep1ms}
	FewCosts = []Cost{Cost1ms, Sleep1ms}
	FewSizes = []int{8, 40}
)

// SleepCost is sleep1ms's sleep and TricklePeriod the trickle source's.
const (
	SleepCost     = time.Millisecond
	TricklePeriod = time.Millisecond
)

// Token is the cell's cost word: cost1ns, cost100ns, cost10us, cost1ms, sleep1ms.
func (c Cost) Token() string {
	return [...]string{"cost1ns", "cost100ns", "cost10us", "cost1ms", "sleep1ms"}[c]
}

// Ns is the nominal cost of one stage on one item (1 ms for Sleep1ms, which uses no CPU).
func (c Cost) Ns() float64 { return [...]float64{1, 100, 10_000, 1_000_000, 1_000_000}[c] }

// Cheap says whether c is 1 ns or 100 ns.
func (c Cost) Cheap() bool { return c == Cost1ns || c == Cost100ns }

// SpinIters is the Work iteration count of about ns nanoseconds (at least 1).
func SpinIters(ns float64) uint64 {
	return uint64(math.Max(1, math.Round(float64(CalibratedIters())*ns/1000)))
}

// Stage returns one stage of cost c: TrivialMap for Cost1ns, Work for SpinIters(c.Ns()), and
// for Sleep1ms time.Sleep(1 ms) then TrivialMap.
func (c Cost) Stage() func(uint64) uint64 {
	switch c {
	case Cost1ns:
		return TrivialMap
	case Sleep1ms:
		return func(v uint64) uint64 {
			time.Sleep(SleepCost)
			return TrivialMap(v)
		}
	}
	iters := SpinIters(c.Ns())
	return func(v uint64) uint64 { return Work(v, iters) }
}

// Reference is what one stage of cost c computes, without sleeping.
func (c Cost) Reference(v uint64) uint64 {
	if c == Cost1ns || c == Sleep1ms {
		return TrivialMap(v)
	}
	return Work(v, SpinIters(c.Ns()))
}

// HeavyTailSeed, Mix64, HeavyTailIters, HeavyTailMap: work.hpp's heavy tail (1 item in 100
// costs ~1 ms, the others ~1 µs; which ones is seeded).
const HeavyTailSeed uint64 = 0x5EEDC057

func Mix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}
func HeavyTailIters(i uint64) uint64 {
	if Mix64(i^HeavyTailSeed)%100 == 0 {
		return 1000 * CalibratedIters()
	}
	return CalibratedIters()
}
func HeavyTailMap(v uint64) uint64 { return Work(v, HeavyTailIters(v)) }

// Item counts, as work.hpp's cs_items_*.
func (o Options) CSItemsLinear3(c Cost) uint64 {
	switch c {
	case Cost1ns:
		return o.pick(100_000, 1_000_000)
	case Cost100ns:
		return o.pick(25_000, 500_000)
	case Cost10us:
		return o.pick(500, 5_000)
	}
	return o.pick(10, 100)
}
func (o Options) CSItemsParmap(c Cost, workers int) uint64 {
	switch c {
	case Cost1ns:
		return o.pick(100_000, 1_000_000)
	case Cost100ns:
		return o.pick(50_000, 1_000_000)
	case Cost10us:
		return o.pick(1_000, 10_000)
	case Cost1ms:
		return o.pick(20, 200)
	}
	return o.pick(10, 100) * uint64(workers)
}
func (o Options) CSFewRounds(n int, c Cost) int {
	if o.Quick {
		if n >= 40 {
			return 1
		}
		return 2
	}
	k := 1
	if c == Sleep1ms {
		k = 4
	}
	if n >= 40 {
		return 4 * k
	}
	return 20 * k
}
func (o Options) CSItemsHeavyTail() uint64 { return o.pick(1_000, 10_000) }
func (o Options) CSItemsTrickle() uint64   { return o.pick(30, 200) }

// Workers of each cell (work.hpp's cs_*_workers): linear3 at 1 and NumCPU; fan-out at 1, 2,
// 4, ..., NumCPU, and 8 too for Sleep1ms; few at NumCPU (CPU) and 8 (sleep); heavytail and
// trickle at NumCPU.
func CSLinear3Workers() []int {
	hw := runtime.NumCPU()
	if hw == 1 {
		return []int{1}
	}
	return []int{1, hw}
}
func CSParmapWorkers(c Cost) []int {
	hw := runtime.NumCPU()
	var out []int
	for w := 1; w < hw; w *= 2 {
		out = append(out, w)
	}
	out = append(out, hw)
	if c == Sleep1ms {
		has8 := false
		for _, w := range out {
			has8 = has8 || w == 8
		}
		if !has8 {
			out = append(out, 8)
			sort.Ints(out)
		}
	}
	return out
}
func CSFewWorkers(c Cost) int {
	if c == Sleep1ms {
		return 8
	}
	return runtime.NumCPU()
}

// CSRunWorkers is GOMAXPROCS for a fan-out of W: W, but no more than NumCPU.
func CSRunWorkers(workers int) int {
	if hw := runtime.NumCPU(); workers > hw {
		return hw
	}
	return workers
}

// CSConfig spells [variant_]cell_workersW.
func CSConfig(cell string, workers int, variant string) string {
	if variant != "" {
		variant += "_"
	}
	return variant + cell + "_" + WorkersName(workers)
}

// Expected sums.
func CSExpectedLinear3(c Cost, n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		acc = Sum(acc, c.Reference(c.Reference(c.Reference(i))))
	}
	return acc
}
func CSExpectedParmap(c Cost, n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		acc = Sum(acc, c.Reference(i))
	}
	return acc
}
func CSExpectedHeavyTail(n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		acc = Sum(acc, HeavyTailMap(i))
	}
	return acc
}
func CSExpectedTrickle(linear bool, n uint64) uint64 {
	acc := uint64(0)
	for i := uint64(0); i < n; i++ {
		if linear {
			acc = Sum(acc, TrivialMap(TrivialMap(TrivialMap(i))))
		} else {
			acc = Sum(acc, TrivialMap(i))
		}
	}
	return acc
}

// TrickleItem is a trickle item and the time it was produced at (monotonic).
type TrickleItem struct {
	V    uint64
	Born time.Time
}

// LatencyRecorder collects the latencies of a trickle run's items (one sink at a time).
type LatencyRecorder struct{ Ns []int64 }

func (r *LatencyRecorder) Record(t TrickleItem) {
	r.Ns = append(r.Ns, time.Since(t.Born).Nanoseconds())
}

// percentileNs is the q-quantile (nearest rank) of sorted samples.
func percentileNs(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank > 0 {
		rank--
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return float64(sorted[rank])
}

// MeasureLatency is Measure for the trickle cells: run(rec) returns the sink's sum and records
// each item's latency; the row adds p50_us, p99_us and max_us.
func MeasureLatency(name string, items, expected uint64, run func(rec *LatencyRecorder) uint64) Row {
	rec := &LatencyRecorder{Ns: make([]int64, 0, items)}
	row := measure(name, items, expected, func() uint64 { return run(rec) }, false)
	if uint64(len(rec.Ns)) != items {
		row["error_occurred"] = true
		row["error_message"] = "wrong result: the pipeline lost or duplicated items"
	}
	s := append([]int64(nil), rec.Ns...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	row["p50_us"] = percentileNs(s, 0.50) / 1000
	row["p99_us"] = percentileNs(s, 0.99) / 1000
	if len(s) > 0 {
		row["max_us"] = float64(s[len(s)-1]) / 1000
	}
	return row
}
