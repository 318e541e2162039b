# non-tail recursion: fib 30 (about 2.7 million calls, each with an
# integer comparison, two subtractions and an addition). The issue names
# "fib 25"; 30 is the same workload scaled so that both tools run long
# enough (Nix 2.8: ~0.35 s) for the CPU ratio to mean something.
let fib = n: if n < 2 then n else fib (n - 1) + fib (n - 2); in fib 30
