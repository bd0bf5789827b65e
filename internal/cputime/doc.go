// Package cputime reads the process's CPU time, which benchmarks report per
// operation beside ns/op: on a machine shared with other work, wall time
// per op grows with the load, CPU time per op much less.
package cputime
