# Past --max-call-depth the evaluation stops with an error, never a crash.
let
  f = n: if n == 0 then 0 else 1 + f (n - 1);
in
f 5000
