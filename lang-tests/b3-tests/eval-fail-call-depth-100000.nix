# 100000 nested calls exceed current Nix's default max-call-depth (10000):
# a controlled error, never a crash of the evaluator.
let
  f = n: if n == 0 then 0 else 1 + f (n - 1);
in
f 100000
