// heavy_tail: fan_out_fan_in's programs (bench.FanOut, bench.FanOutBatched) over a
// heavy-tailed cost, a seeded few items far costlier than the rest (bench.HeavyTailMap):
// load balance.
package main

import "rillbench/internal/bench"

func main() {
	bench.FanMain("heavy_tail", bench.Options.CSItemsHeavyTail, bench.CSExpectedHeavyTail,
		bench.HeavyTailMap)
}
