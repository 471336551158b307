// fan_out_fan_in: 1 source -> W worker goroutines (uneven cost, 1 µs on average) -> 1 sink,
// channels of capacity 64, GOMAXPROCS = W, items in any order; an item per channel operation
// (peritem: bench.FanOut) and batches of bench.FanBatch (bench.FanOutBatched).
package main

import "rillbench/internal/bench"

func main() {
	bench.FanMain("fan_out_fan_in", bench.Options.ItemsFan, bench.ExpectedFan, bench.FanMap)
}
