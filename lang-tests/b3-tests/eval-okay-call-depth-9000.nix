# Non-tail recursion 9000 calls deep: below current Nix's default
# max-call-depth (10000), so it must evaluate without a stack overflow.
let
  f = n: if n == 0 then 0 else 1 + f (n - 1);
in
f 9000
