module rillbench

go 1.19
