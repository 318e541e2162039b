# foldl' over a million elements is strict and iterative.
[
  (builtins.foldl' (a: b: a + b) 0 (builtins.genList (x: x) 1000000))
  (builtins.stringLength (builtins.concatStringsSep "" (builtins.genList (x: "ab") 1000000)))
  (builtins.length (builtins.filter (x: x / 2 * 2 == x) (builtins.genList (x: x) 1000000)))
]
