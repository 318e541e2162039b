# 100000 nested non-tail calls: b3 evaluates them (on a large evaluation
# stack, max-call-depth 200000 by default) instead of crashing.
let
  f = n: if n == 0 then 0 else 1 + f (n - 1);
in
f 100000
